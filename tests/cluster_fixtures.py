"""A real multi-node Ray cluster on this machine for tests, brought up and down by the scripts users run
(cluster/local/up.sh, down.sh), with a private token file and private state dir.

`local_cluster` is module-scoped: tests of one module share one cluster (starting one costs ~30 s on
2 cores). tests/test_cluster_local.py uses it for the smoke job, the token checks and the Prometheus
scrape; another module importing `local_cluster` gets a cluster of its own. Never `ray stop`: other Ray instances run here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UP = ROOT / "cluster" / "local" / "up.sh"
DOWN = ROOT / "cluster" / "local" / "down.sh"


@dataclass
class LocalCluster:
    """What up.sh recorded (`cluster.json`), the environment that reaches the cluster with its token,
    and bookkeeping the tests share (submitted jobs, timings)."""

    state_dir: Path
    info: dict
    env: dict[str, str]
    up_seconds: float
    jobs: list[dict] = field(default_factory=list)  # {"submission_id", "out", "seconds"} of jobs run on it

    @property
    def dashboard_url(self) -> str:
        return self.info["dashboard_url"]

    @property
    def gcs_address(self) -> str:
        return self.info["gcs_address"]

    @property
    def head_temp_dir(self) -> Path:
        """Ray's temp dir of the head: `session_latest/metrics/prometheus/prometheus.yml` is under it."""
        return Path(self.info["head_temp_dir"])

    @property
    def token(self) -> str:
        return Path(self.info["token_path"]).read_text().strip()

    @property
    def node_ids(self) -> dict[str, str]:
        """{node name (head, worker-1, ...): Ray node id}."""
        return {n["name"]: n["node_id"] for n in self.info["nodes"]}

    def shell(self, script: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`bash -c script` in the repository root with the cluster's environment (or `env`)."""
        return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)

    def http_status(self, path: str, token: str | None) -> int:
        """Status of GET dashboard `path`, with `Authorization: Bearer token` when a token is given."""
        return http_status(self.dashboard_url + path, token)

    def live_processes(self) -> list[str]:
        """`pid command` of every live (non-zombie) process in the nodes' sessions: up.sh starts each
        node with setsid, so its session id is the pid it recorded."""
        sessions = {str(n["pgid"]) for n in self.info["nodes"]}
        table = subprocess.run(["ps", "-e", "-o", "pid=,sid=,stat=,comm="], capture_output=True, text=True,
                               check=True).stdout
        rows = [line.split(None, 3) for line in table.splitlines()]
        return [f"{r[0]} {r[3] if len(r) > 3 else ''}" for r in rows
                if len(r) >= 3 and r[1] in sessions and not r[2].startswith("Z")]


def http_status(url: str, token: str | None) -> int:
    """Status of GET `url`, with `Authorization: Bearer token` when a token is given."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def cluster_env(state_dir: Path) -> dict[str, str]:
    """The test process's environment without any RAY_* of the developer's shell, plus the knobs that
    keep the cluster private: its state dir, its own token file, this venv's `ray`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(FINADAPT_CLUSTER_DIR=str(state_dir), RAY_AUTH_TOKEN_PATH=str(state_dir / "auth_token"),
               FINADAPT_RAY=str(BIN / "ray"), PATH=f"{BIN}:{env.get('PATH', '')}")
    return env


def start_cluster(state_dir: Path, timeout: float = 420) -> LocalCluster:
    """Run `cluster/local/up.sh` (head + one worker node by default); fails the test with its output."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = cluster_env(state_dir)
    t0 = time.monotonic()
    up = subprocess.run([str(UP)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - t0
    if up.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in state_dir.glob("*.log"))
        subprocess.run([str(DOWN)], cwd=ROOT, env=env, capture_output=True, timeout=120)
        pytest.fail(f"cluster/local/up.sh failed ({up.returncode}):\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}{logs}")
    # What a user's shell has after `source <state>/cluster.env`: RAY_ADDRESS, RAY_AUTH_MODE, token path.
    exports = subprocess.run(["bash", "-c", f"source {state_dir / 'cluster.env'} && env -0"], env=env,
                             capture_output=True, text=True, check=True).stdout
    sourced = dict(item.split("=", 1) for item in exports.split("\0") if "=" in item)
    info = json.loads((state_dir / "cluster.json").read_text())
    return LocalCluster(state_dir=state_dir, info=info, env=sourced, up_seconds=seconds)


def stop_cluster(cluster: LocalCluster, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `cluster/local/down.sh` for that state dir (it signals only the recorded process groups)."""
    return subprocess.run([str(DOWN)], cwd=ROOT, env=cluster_env(cluster.state_dir), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """Head + one worker node, token auth on, for the whole module; stopped at the end (down.sh is
    idempotent: a test may already have stopped it)."""
    cluster = start_cluster(tmp_path_factory.mktemp("local-cluster"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
