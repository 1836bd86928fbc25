"""Issue 11, item 2: every output location is probed (write + delete) before any model or data is
loaded; if the final write still fails, the results are kept in a local fallback directory."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from finadapt import storage
from finadapt.cli import app
from finadapt.storage import StorageError
from finadapt.tasks import unregister_task

ROWS = [("Profit rose sharply.", "positive"), ("Losses doubled.", "negative"), ("Sales grew 9%.", "positive")]


def closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


@pytest.fixture(autouse=True)
def private_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FINADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FINADAPT_FALLBACK_DIR", str(tmp_path / "fallback"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    unregister_task("probe_task")


@pytest.fixture
def task_spec(tmp_path) -> Path:
    data = tmp_path / "probe.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in ROWS))
    spec = tmp_path / "probe.yaml"
    spec.write_text(json.dumps({"name": "probe_task", "data": str(data), "labels": ["positive", "negative"],
                                "prompt": "Sentiment?\nText: {text}\nAnswer:"}))
    return spec


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if the evaluation loads a model or data: the probe must come first."""
    import finadapt.evaluate.api as api

    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("model or data loaded before the output location was checked")

    for name in ("model_provenance", "run_evaluation", "load_tokenizer"):
        monkeypatch.setattr(api, name, forbidden)
    return calls


def eval_args(spec: Path, out: str) -> list[str]:
    return ["eval", "-m", "tiny-random", "--no-ray", "--mode", "choice", "--set", "bootstrap=0",
            "--task-file", str(spec), "-o", out]


# --------------------------------------------------------------------------- storage.probe_writable
def test_probe_local_directory_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new" / "out"
    storage.probe_writable(str(out))
    assert out.is_dir() and list(out.iterdir()) == []


def test_probe_under_a_regular_file_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="not writable") as err:
        storage.probe_writable(str(blocker / "out"))
    assert str(blocker / "out") in str(err.value)


def test_probe_read_only_directory(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories; the regular-file case covers root")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="not writable"):
            storage.probe_writable(str(ro / "out"))
    finally:
        ro.chmod(0o700)


def test_probe_s3_bucket_leaves_nothing_behind(s3_bucket):
    storage.probe_writable(f"{s3_bucket}/run/out")
    assert storage.list_files(s3_bucket) == []


def test_probe_s3_missing_bucket_names_it(s3_server):
    with pytest.raises(StorageError, match="no-such-bucket-x1"):
        storage.probe_writable("s3://no-such-bucket-x1/out")


def test_probe_s3_dead_endpoint_names_uri_and_endpoint(s3_server, monkeypatch):
    dead = closed_port_endpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(StorageError) as err:
        storage.probe_writable("s3://bucket/out")
    assert "s3://bucket/out" in str(err.value) and dead.split("//")[1] in str(err.value)


# --------------------------------------------------------------------------- eval probes before work
def test_eval_with_dead_s3_endpoint_fails_before_loading(s3_server, monkeypatch, task_spec, no_work):
    dead = closed_port_endpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    result = CliRunner().invoke(app, eval_args(task_spec, "s3://results/eval"))
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert "s3://results/eval" in result.stderr and dead.split("//")[1] in result.stderr
    assert "Traceback" not in result.output and no_work == []


def test_eval_with_unwritable_local_output_fails_before_loading(tmp_path, task_spec, no_work):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, eval_args(task_spec, str(blocker / "out")))
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert str(blocker / "out") in result.stderr and no_work == []


def test_evaluate_api_probes_too(tmp_path, no_work):
    from finadapt.config import EvalConfig
    from finadapt.evaluate.api import evaluate

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageError):
        evaluate(EvalConfig(tasks=["fpb"], output_dir=str(blocker / "out")))
    assert no_work == []


# --------------------------------------------------------------------------- fallback when the write fails
def test_results_kept_locally_when_the_endpoint_dies_mid_run(s3_bucket, monkeypatch, task_spec, tmp_path):
    """The probe passes, the endpoint dies during the evaluation, and the results land in the fallback dir."""
    import finadapt.evaluate.api as api

    real_run = api.run_evaluation
    dead = closed_port_endpoint()

    def run_then_kill_endpoint(*args, **kwargs):
        run = real_run(*args, **kwargs)
        monkeypatch.setenv("AWS_ENDPOINT_URL", dead)  # every later S3 call goes to a closed port
        return run

    monkeypatch.setattr(api, "run_evaluation", run_then_kill_endpoint)
    out = f"{s3_bucket}/eval"
    result = CliRunner().invoke(app, eval_args(task_spec, out))
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    kept = [p for p in (tmp_path / "fallback").iterdir() if p.is_dir()]
    assert len(kept) == 1 and kept[0].name.startswith("eval-")
    line = [x for x in result.stderr.splitlines() if x.strip() and not x.startswith("evaluating")]  # tqdm
    assert len(line) == 1 and out in line[0] and str(kept[0]) in line[0], result.stderr
    results = json.loads((kept[0] / "results.json").read_text())
    assert results["output_dir"] == out and results["scores"][0]["task"] == "probe_task"
    assert results["scores"][0]["n"] == len(ROWS)
    preds = (kept[0] / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len(ROWS)
    assert (kept[0] / "results.md").is_file() and (kept[0] / "results.png").is_file()


def test_write_with_fallback_writes_to_the_target_when_it_works(tmp_path):
    files = {"a.json": b"{}", "sub/b.txt": b"x"}
    assert storage.write_with_fallback(str(tmp_path / "out"), files, "eval") == str(tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.txt").read_bytes() == b"x"
    assert not (tmp_path / "fallback").exists()


def test_write_with_fallback_keeps_files_locally(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageError) as err:
        storage.write_with_fallback(str(blocker / "out"), {"a.json": b"{}", "sub/b.txt": b"x"}, "eval")
    kept = next((tmp_path / "fallback").iterdir())
    assert str(kept) in str(err.value) and str(blocker / "out") in str(err.value)
    assert (kept / "a.json").read_bytes() == b"{}" and (kept / "sub" / "b.txt").read_bytes() == b"x"
