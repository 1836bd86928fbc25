"""`ray job submit` of the evaluation entrypoint against a real head node started from this venv,
with token authentication on (the project never turns it off)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A `ray start --head --block` in its own process group, stopped by signalling that group only
    (never `ray stop`, which would kill every Ray cluster on the machine)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=False,
                   capture_output=True, timeout=60)
    port, dash = _free_port(), _free_port()
    log = open(tmp_path_factory.mktemp("ray_head") / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--include-dashboard=true",
         f"--ray-client-server-port={_free_port()}", f"--temp-dir={tmp_path_factory.mktemp('rt')}",
         # the agent's default ports (52365, ...) are taken by any other Ray instance on the machine,
         # and then the job API answers "No available agent" forever: use free ones
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        status = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60)
        if status.returncode == 0:
            break
        if proc.poll() is not None:
            pytest.fail(f"ray head exited early, see {log.name}")
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail(f"ray head did not answer on {address}, see {log.name}")
    # The job API answers before the node's agent can run jobs; wait until a trivial job succeeds
    # (on a loaded 2-core machine the agent has taken over two minutes to register).
    deadline = time.time() + 420
    while True:
        probe = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", "python", "-c", "print(1)"],
                               env=env, capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            break
        if time.time() > deadline or "No available agent" not in probe.stdout + probe.stderr:
            os.killpg(proc.pid, signal.SIGTERM)
            pytest.fail(f"trivial job failed: {probe.stdout[-1500:]} {probe.stderr[-1500:]}")
        time.sleep(3)
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_evaluate_entrypoint_runs_as_a_ray_job(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "eval-job"
    runtime_env = {"env_vars": {"FINADAPT_CACHE_DIR": str(tmp_path / "cache")}}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps(runtime_env), "--",
           "python", "pipelines/evaluate.py", "--config", "pipelines/configs/demo.yaml",
           "model.spec=tiny-random", "tasks=[fpb,headlines]", "limit=3", "task_limits={}", "modes=[choice,compat]",
           "bootstrap=20", "generation.max_new_tokens_classification=4", "generation.max_new_tokens_headlines=4",
           "ray.cpus_per_worker=1", f"output_dir={out}"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in (job.stdout + job.stderr).lower()
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["spec"] == "tiny-random"
    assert {(s["task"], s["mode"]) for s in results["scores"]} == {
        ("fpb", "choice"), ("fpb", "compat"), ("headlines", "choice"), ("headlines", "compat")}
    assert next(s for s in results["scores"] if s["task"] == "headlines")["n"] == 27  # 3 headlines x 9


def test_job_submit_without_token_is_refused(ray_head):
    """Token auth stays on: the dashboard's job API answers 401 to a request without the token."""
    import urllib.error
    import urllib.request

    address, _ = ray_head
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=30)
    assert err.value.code == 401


@pytest.mark.slow
def test_corpus_entrypoint_runs_as_a_ray_job(ray_head, tmp_path):
    """The corpus stage through `ray job submit` on a small real slice of the Reuters/Wikipedia corpora."""
    import gzip

    from finadapt.paths import data_dir

    address, env = ray_head
    inputs = []
    for name, domain in (("reuters21578", "financial"), ("wikipedia_en", "general")):
        path = tmp_path / f"{name}.jsonl"
        with gzip.open(data_dir() / "corpora" / f"{name}.jsonl.gz", "rt") as src, open(path, "w") as dst:
            for i, line in enumerate(src):
                if i >= 300:
                    break
                dst.write(line)
        inputs.append(f"{{path: '{path}', source: {name}, domain: {domain}}}")
    out = tmp_path / "corpus-job"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "python", "pipelines/prepare_corpus.py", "--config", "pipelines/configs/corpus.yaml",
           f"inputs=[{', '.join(inputs)}]", f"output_dir={out}", "pack.tokenizer=tiny-random", "pack.seq_len=256"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["documents_per_stage"]["ingested"] == {"reuters21578": 300, "wikipedia_en": 300}
    assert manifest["packing"]["tokens"] == sum(manifest["tokens"]["by_domain_after_mix"].values()) > 0
    assert (out / "report.md").exists()


@pytest.mark.slow
def test_training_stages_run_as_ray_jobs(ray_head, tmp_path):
    """Stage 1 on packed shards, then stage 2 from its best checkpoint, each through `ray job submit`."""
    from train_fixtures import write_shards

    address, env = ray_head
    shards = write_shards(tmp_path / "corpus")
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--"]
    common = ["model.dtype=auto", "ray.cpus_per_worker=1", f"checkpoint.storage_path={tmp_path / 'ckpt'}"]
    pre = subprocess.run(submit + [
        "python", "pipelines/pretrain.py", "--config", "pipelines/configs/pretrain_demo.yaml", "model.spec=tiny-random",
        f"data.shards={shards}", "data.seq_len=32", "max_steps=3", "eval_every_steps=2", *common,
        f"output_dir={tmp_path / 'pre'}"], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["plan"]["total_steps"] == 3 and summary["best_metrics"]["step"] in (2, 3)
    sft = subprocess.run(submit + [
        "python", "pipelines/sft.py", "--config", "pipelines/configs/sft_demo.yaml",
        f"model.spec={tmp_path / 'pre' / 'best'}", "data.limit_per_task=8", "data.max_length=512",
        "batch.batch_size=8", "batch.grad_accum=1", "max_steps=2", "eval_every_steps=2",
        "validation.limit=3", "validation.task_limits={headlines: 1, ner: 2}", *common,
        f"output_dir={tmp_path / 'sft'}"], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert sft.returncode == 0, sft.stdout[-3000:] + sft.stderr[-3000:]
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["model"] == str(tmp_path / "pre" / "best")
    assert "val_score" in summary["best_metrics"]
    assert (tmp_path / "sft" / "best" / "model.safetensors").exists()


@pytest.mark.slow
def test_synthesize_entrypoint_runs_as_a_ray_job(ray_head, tmp_path):
    """The synthetic-instruction stage (embedded teacher, hf engine) through `ray job submit`."""
    address, env = ray_head
    out = tmp_path / "synth-job"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "python", "pipelines/synthesize.py", "--config", "pipelines/configs/synth.yaml", "tasks=[fpb,headlines]",
           "requests_per_task=3", "task_requests={}", "sampling.max_tokens=64", "verify.enabled=false",
           "ray.cpus_per_worker=1", f"output_dir={out}"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["requests"] == 6 and report["engine"] == "hf"
    lines = lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()]  # noqa: E731
    assert len(lines("synthetic.jsonl")) + len(lines("quarantine.jsonl")) == 6
    assert report["totals"]["accepted"] == len(lines("synthetic.jsonl"))
