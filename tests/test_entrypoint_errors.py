"""The `pipelines/*.py` entrypoints (what `ray job submit` runs) report the project's errors like the CLI:
one line naming the place and exit code 2, also when the error was raised inside a Ray task."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml
from ray.exceptions import RayTaskError

from finadapt import errors
from finadapt.storage import StorageError

ROOT = Path(__file__).resolve().parents[1]


def _entrypoint(name: str):
    spec = importlib.util.spec_from_file_location(f"entry_{name}", ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_error_raised_in_a_ray_task_is_reported_as_its_own_one_line(capsys):
    remote = RayTaskError("read_file", "Traceback (most recent call last):\n  File ...\nStorageError: boom",
                          StorageError("s3://b/corpus/part-3.jsonl.gz: unreadable (truncated)")).as_instanceof_cause()
    assert isinstance(remote, errors.FinadaptError)  # Ray's wrapper subclasses the cause

    code = errors.report(remote)

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("storage error: s3://b/corpus/part-3.jsonl.gz: unreadable (truncated)")
    assert "Traceback" not in lines[0] and "ray::" not in lines[0]


def test_corpus_entrypoint_input_of_unknown_format_is_one_line_exit_2(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.docx").write_text("not a format the corpus reads")
    config = tmp_path / "corpus.yaml"
    config.write_text(yaml.safe_dump({"inputs": [{"path": str(folder), "source": "mine", "domain": "financial"}],
                                      "output_dir": str(tmp_path / "out"), "ray": {"num_cpus": 1}}))

    import ray

    started_here = not ray.is_initialized()
    try:
        code = _entrypoint("prepare_corpus").main(["--config", str(config)])
    finally:
        if started_here:  # the stage starts a local Ray; later modules start their own
            ray.shutdown()

    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 2
    assert len(err) == 1 and "notes.docx" in err[0] and "format" in err[0], err
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("name", ["prepare_corpus", "synthesize", "pretrain", "sft", "evaluate"])
def test_every_entrypoint_reports_finadapt_errors(name, monkeypatch, capsys):
    """Each entrypoint goes through `stages.run_entrypoint`, which turns a finadapt error raised by the
    stage into one line and exit 2."""
    from finadapt import stages

    raised = StorageError(f"s3://b/{name}: unwritable")

    def failing_run(cfg):
        raise raised

    for known in list(stages.STAGES.values()):
        monkeypatch.setitem(stages.STAGES, known.name, dataclasses.replace(known, run=failing_run))
    monkeypatch.chdir(ROOT)  # the stages' default configs are relative to the project root
    code = _entrypoint(name).main([])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 2 and len(err) == 1 and f"s3://b/{name}: unwritable" in err[0], err


def test_pretrain_entrypoint_without_shards_is_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "corpus"
    empty.mkdir()
    code = _entrypoint("pretrain").main([
        "--config", str(ROOT / "pipelines/configs/pretrain_demo.yaml"), "model.spec=tiny-random",
        f"data.shards={empty}", f"output_dir={tmp_path / 'out'}", f"checkpoint.storage_path={tmp_path / 'ckpt'}"])

    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 2
    assert len(err) == 1 and str(empty) in err[0] and "shards" in err[0], err
