"""Issue 14, part 1: a real multi-node Ray cluster on this machine (cluster/local/up.sh: head + a worker
node, token auth on), a small real end-to-end job submitted through the job API with the README's
commands (corpus -> stage 2 with two Ray Train workers on different nodes -> evaluation), Ray's state
API showing where the work ran, the token refused/accepted, and down.sh leaving no process behind.

The tests run in file order on one cluster (`local_cluster`, module-scoped): the job, the token
checks, then the Prometheus scrape of every project metric, then down.sh."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from cluster_fixtures import BIN, ROOT, local_cluster, stop_cluster  # noqa: F401  (local_cluster: fixture)

from finadapt.telemetry import prometheus
from finadapt.telemetry.names import METRICS

RESULTS_ENV = "FINADAPT_CLUSTER_METRICS_OUT"  # where the scrape test writes cluster-metrics.json

# The README's "Run on a cluster" commands, executed as written: up.sh and down.sh read the state dir
# from FINADAPT_CLUSTER_DIR (set by the fixture); `runs/local-cluster`, `.venv/bin/` and the output dir
# are the only text substituted (the test's private state dir, this venv, a temporary directory).
README_UP = "cluster/local/up.sh"
README_SOURCE = "source runs/local-cluster/cluster.env"
README_SUBMIT = '.venv/bin/ray job submit --working-dir . -- bash pipelines/cluster_smoke.sh "$PWD/runs/cluster-smoke"'
README_DOWN = "cluster/local/down.sh"
JOB_TIMEOUT = 540  # the job takes ~3.5 min on 2 busy cores


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def test_readme_run_on_a_cluster_shows_the_tested_commands():
    """The README's commands are the ones these tests run (each at the start of a line of a bash block)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme_section("Run on a cluster"), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    for command in (README_UP, README_SOURCE, README_SUBMIT, README_DOWN):
        assert any(line.startswith(command) for line in lines), f"README 'Run on a cluster' lacks: {command}"


def _job_id(output: str) -> str:
    found = re.findall(r"Job '([\w-]+)' submitted successfully", output)
    assert found, f"no submission id in the job CLI output:\n{output[-3000:]}"
    return found[0]


def _state(cluster, kind: str) -> list[dict]:
    """Every task, actor or node Ray's state API lists, from the dashboard's /api/v0 with the token
    (plain HTTP: the ray client would cache whichever token this test process met first)."""
    request = urllib.request.Request(f"{cluster.dashboard_url}/api/v0/{kind}?limit=10000&detail=1",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert answer["result"], f"/api/v0/{kind}: {answer['msg']}"
    listed = answer["data"]["result"]
    assert listed["total"] == listed["num_after_truncation"], f"/api/v0/{kind} was truncated: {listed['total']}"
    return listed["result"]


@pytest.mark.slow
def test_job_runs_across_two_nodes(local_cluster, tmp_path):
    cluster = local_cluster
    print(f"\nup.sh: {cluster.up_seconds:.1f} s")
    nodes = {n["node_id"] for n in _state(cluster, "nodes") if n["state"] == "ALIVE"}
    assert nodes == set(cluster.node_ids.values()) and len(nodes) == 2, \
        f"expected a head and one worker node alive, got {cluster.node_ids} / alive {nodes}"
    jobs_before = {t["job_id"] for t in _state(cluster, "tasks")}

    out = tmp_path / "smoke"
    script = "; ".join([
        README_SOURCE.replace("runs/local-cluster", str(cluster.state_dir)),
        README_SUBMIT.replace(".venv/bin/", f"{BIN}/").replace('"$PWD/runs/cluster-smoke"', f'"{out}"')])
    t0 = time.monotonic()
    try:
        job = cluster.shell(f"set -e; {script}", timeout=JOB_TIMEOUT)
    except Exception as err:  # TimeoutExpired: the CLI's output so far names the job; stop it, show its logs
        partial = (getattr(err, "stdout", b"") or b"")
        partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        job_id = _job_id(partial)
        logs = cluster.shell(f"{BIN}/ray job logs {job_id} | tail -c 6000; {BIN}/ray job stop {job_id}", timeout=120)
        pytest.fail(f"job {job_id} did not finish in {JOB_TIMEOUT} s; its logs:\n{logs.stdout}{logs.stderr}")
    seconds = time.monotonic() - t0
    output = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in output, f"the job failed:\n{output[-6000:]}"
    cluster.jobs.append({"submission_id": _job_id(output), "out": str(out), "seconds": seconds})
    print(f"job: {seconds:.1f} s")

    # Outputs of the three stages, read from the absolute output dir
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    assert manifest["documents_per_stage"]["ingested"] == {"reuters21578": 400, "wikipedia_en": 200}
    assert manifest["packing"]["sequences"] > 0 and manifest["packing"]["shards"]
    assert all(Path(shard).is_file() for shard in manifest["packing"]["shards"])
    summary = json.loads((out / "sft" / "summary.json").read_text())
    assert summary["plan"]["total_steps"] == 3 and summary["best_metrics"]["step"] == 3
    assert summary["config"]["ray"]["workers"] == 2
    history = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3] and all(h["loss"] > 0 for h in history)
    # DDP across the two nodes kept both replicas identical (the loop compares them at evaluation)
    assert summary["best_metrics"]["replica_weight_diff"] == 0.0
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["model"]["spec"] == str(out / "sft" / "best")
    assert sorted((s["task"], s["mode"], s["n"]) for s in results["scores"]) == [
        ("fpb", "choice", 4), ("fpb", "compat", 4), ("headlines", "choice", 9), ("headlines", "compat", 9)]
    assert len((out / "eval" / "predictions.jsonl").read_text().splitlines()) >= 13

    # Where the work ran, from Ray's state API. Each stage is a driver (a Ray job) of its own; only
    # this submission ran drivers since the snapshot.
    by_job: dict[str, list[dict]] = defaultdict(list)
    for task in _state(cluster, "tasks"):
        if task["job_id"] not in jobs_before:
            by_job[task["job_id"]].append(task)
    corpus = [job for job, ts in by_job.items() if any("parse_files" in t["name"] for t in ts)]
    assert len(corpus) == 1, f"one corpus driver expected among jobs {sorted(by_job)}"
    data_nodes = {t["node_id"] for t in by_job[corpus[0]] if t["type"] == "NORMAL_TASK" and t["node_id"]}
    assert data_nodes == nodes, f"the corpus stage's Ray Data tasks ran on {data_nodes}, not on both nodes {nodes}"
    workers = [a for a in _state(cluster, "actors")
               if a["class_name"] == "RayTrainWorker" and a["job_id"] not in jobs_before]
    placed = [a["node_id"] for a in workers]
    assert len(workers) == 2, f"two Ray Train workers expected, got {placed}"
    assert set(placed) == nodes, f"the two Ray Train workers were not on the two nodes: {placed} vs {nodes}"


@pytest.mark.slow
def test_token_is_required_by_the_job_and_dashboard_apis(local_cluster, tmp_path):
    cluster = local_cluster
    for path in ("/api/jobs/", "/nodes?view=summary", "/api/cluster_status"):
        assert cluster.http_status(path, None) == 401, f"{path} answered without the token: auth is off"
        assert cluster.http_status(path, "not-the-token") in (401, 403), f"{path} accepted a wrong token"
        assert cluster.http_status(path, cluster.token) == 200, f"{path} refused the cluster's token"
    # The job CLI: with the sourced cluster.env it works; without any token (no token file at HOME, no
    # RAY_AUTH_TOKEN*) the server refuses it (401 "Missing authentication token").
    listed = cluster.shell(f"{BIN}/ray job list", timeout=120)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert "finadapt-cluster-ready-" in listed.stdout + listed.stderr  # up.sh's probe job
    home = tmp_path / "home"
    home.mkdir()
    bare = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    bare.update(HOME=str(home))
    refused = cluster.shell(f"{BIN}/ray job list", timeout=120, env=bare)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0, f"ray job list without a token succeeded:\n{text[-2000:]}"
    assert "Unauthorized" in text or "401" in text, text[-2000:]
    wrong = cluster.shell(f"{BIN}/ray job list", timeout=120, env={**bare, "RAY_AUTH_TOKEN": "not-the-token"})
    assert wrong.returncode != 0, "ray job list with a wrong token succeeded"


# ------------------------------------------------------------------------------------------------------
# Prometheus (Debian's package) scraping this same cluster through the discovery file Ray's head writes
# (every node's --metrics-export-port), while a job runs every instrumented stage as a driver of the
# cluster: every metric of finadapt.telemetry.names must come back with its tags and the values the
# stages reported themselves. Without Prometheus the test fails (never skips).
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """Debian's Prometheus, or a failure (not a skip): CI must install it (make test does)."""
    try:
        return prometheus.find_binary()
    except prometheus.PrometheusError as err:
        pytest.fail(str(err), pytrace=False)


def _by_tags(samples: list[dict], name: str, *keys: str) -> dict:
    """Sum (counters) or max (gauges) of a metric's series per value of `keys`."""
    out: dict = {}
    for s in samples:
        if s["name"] == name:
            key = tuple(s["tags"].get(k, "") for k in keys) if len(keys) != 1 else s["tags"].get(keys[0], "")
            out[key] = (out.get(key, 0.0) + s["value"]) if s["kind"] == "counter" else max(out.get(key, -math.inf),
                                                                                          s["value"])
    return out


@pytest.mark.slow
def test_prometheus_scrapes_every_stages_metrics(local_cluster, prometheus_binary, tmp_path):
    """Prometheus scrapes the cluster (Ray's file-based discovery) every second while the job runs;
    afterwards every table metric is there with its pipeline/stage/task/filter/reason tags and the
    values the stages reported themselves."""
    pipeline = f"telemetry-{uuid.uuid4().hex[:6]}"
    cluster = local_cluster
    config = prometheus.scrape_config([prometheus.discovery_file(cluster.head_temp_dir)], interval_s=1)
    with prometheus.Prometheus(config, workdir=tmp_path / "prom") as prom:
        out = tmp_path / "job"
        # a driver of the cluster (its GCS address, the token from the sourced cluster.env)
        env = {**cluster.env, "RAY_ADDRESS": cluster.gcs_address, "FINADAPT_PIPELINE": pipeline,
               "PYTHONPATH": str(ROOT / "platform")}
        start = time.monotonic()
        job = subprocess.run([sys.executable, str(ROOT / "tests" / "telemetry_job.py"), str(out)], env=env,
                             capture_output=True, text=True, timeout=900, cwd=ROOT)
        job_seconds = time.monotonic() - start
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        expected = json.loads((out / "expected.json").read_text())
        missing = prom.wait_for([m.prometheus_name for m in METRICS.values()], timeout_s=90)
        assert missing == [], f"not scraped within 90 s of the job's end: {missing}"
        targets = prom.targets_up()
        samples = [s for s in prometheus.project_samples(prom) if s["tags"].get("pipeline") == pipeline]
        version = subprocess.run([prometheus.find_binary(), "--version"], capture_output=True, text=True).stdout

    assert {s["name"] for s in samples} == set(METRICS)
    for s in samples:  # the stage tag is the table's (training: pretrain); trial only on the sweep's
        assert s["tags"]["stage"] == (METRICS[s["name"]].stage or "pretrain"), s
        assert ("trial" in s["tags"]) == (METRICS[s["name"]].stage == "sweep"), s

    corpus = expected["corpus"]
    assert _by_tags(samples, "finadapt_corpus_documents_in") == {(): corpus["documents_in"]}
    assert _by_tags(samples, "finadapt_corpus_documents_out") == {(): corpus["documents_out"]}
    assert _by_tags(samples, "finadapt_corpus_filter_drops", "filter") == corpus["filter_drops"]
    assert _by_tags(samples, "finadapt_corpus_duplicates_removed", "reason") == corpus["duplicates_removed"]
    assert min(corpus["duplicates_removed"].values()) > 0  # the planted copies were found

    synth = expected["synth"]
    assert _by_tags(samples, "finadapt_synth_generations", "task") == synth["generations"]
    assert _by_tags(samples, "finadapt_synth_accepted", "task") == synth["accepted"]
    assert _by_tags(samples, "finadapt_synth_rejected", "task", "reason") == {(t, r): n for t, r, n in synth["rejected"]}
    assert set(_by_tags(samples, "finadapt_synth_generated_tokens", "task")) == set(synth["generations"])

    train = expected["pretrain"]
    assert _by_tags(samples, "finadapt_train_step") == {(): train["total_steps"]} == {(): train["step"]}
    for name, key in (("loss", "loss"), ("mfu", "mfu"), ("tokens_per_second", "tokens_per_s")):
        assert _by_tags(samples, f"finadapt_train_{name}") == {(): pytest.approx(train[key], rel=1e-6)}, name

    evaluation = expected["eval"]
    assert _by_tags(samples, "finadapt_eval_rows_scored", "task") == evaluation["rows"]
    assert _by_tags(samples, "finadapt_eval_score", "task", "mode", "metric") == {
        (t, m, k): pytest.approx(v, rel=1e-9) for t, m, k, v in evaluation["scores"]}

    sweep = expected["sweep"]
    assert _by_tags(samples, "finadapt_sweep_trial_score", "trial") == {sweep["trial"]: sweep["score"]}
    assert _by_tags(samples, "finadapt_sweep_trial_step", "trial") == {sweep["trial"]: sweep["step"]}

    about = {"what": "every project metric as Prometheus returned it (last_over_time over 1h) after the "
                     "telemetry job (tests/telemetry_job.py) ran on the local multi-node Ray cluster "
                     "(head + worker node), right after the cluster smoke job",
             "pipeline": pipeline, "ray_nodes_scraped": sorted(t["metric"]["instance"] for t in targets),
             "prometheus": version.splitlines()[0] if version else "", "scrape_interval": "1s",
             "job_seconds": round(job_seconds, 1),
             "stage_seconds": {k: v.get("seconds") for k, v in expected.items()}}
    target = Path(os.environ.get(RESULTS_ENV) or tmp_path / "cluster-metrics.json")
    document = prometheus.write_cluster_metrics(target, samples, about)
    assert document["names_without_series"] == []


@pytest.mark.slow
def test_down_stops_every_process_of_the_cluster(local_cluster):
    """Last in the module: down.sh stops exactly the recorded nodes, every process of their sessions."""
    cluster = local_cluster
    assert cluster.live_processes(), "the cluster's processes should be running before down.sh"
    t0 = time.monotonic()
    down = stop_cluster(cluster)
    print(f"\ndown.sh: {time.monotonic() - t0:.1f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert cluster.live_processes() == []
    with pytest.raises(OSError):
        cluster.http_status("/api/version", cluster.token)
    assert not Path(cluster.info["temp_root"]).exists()
    assert not (cluster.state_dir / "cluster.json").exists()
