"""Readiness checks for cluster/local/up.sh, and the cluster.json it leaves for tests and tools.

    ready.py gcs --address 127.0.0.1:PORT --timeout S --log HEAD_LOG --pgid HEAD_PGID
    ready.py cluster --dashboard http://127.0.0.1:PORT --gcs 127.0.0.1:PORT --state DIR --timeout S

`gcs`: the head's GCS port accepts connections (worker nodes can join). `cluster`: every node listed in
`<state>/nodes.tsv` is alive (matched by its `finadapt-node` label), and a trivial job succeeds through
the job API — the API answers well before the head's agent can run jobs ("No available agent") — then
`<state>/cluster.json` records the dashboard, GCS, token file and per node: node id, process group,
CPUs, metrics export port, temp dir and log. Kept in Python because it parses Ray's JSON answers.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

NODE_COLUMNS = ("name", "pgid", "num_cpus", "metrics_export_port", "temp_dir", "log")
LABEL = "finadapt-node"


def read_nodes(state: Path) -> list[dict]:
    """The nodes up.sh started, from `<state>/nodes.tsv` (one tab-separated line per node)."""
    nodes = []
    for line in (state / "nodes.tsv").read_text().splitlines():
        node = dict(zip(NODE_COLUMNS, line.split("\t")))
        node.update(pgid=int(node["pgid"]), num_cpus=float(node["num_cpus"]),
                    metrics_export_port=int(node["metrics_export_port"]))
        nodes.append(node)
    return nodes


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_gcs(address: str, timeout: float, log: str, pgid: int | None) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError:
            if pgid is not None and not alive(pgid):
                sys.exit(f"the head (process group {pgid}) exited; see {log}")
            if time.monotonic() > deadline:
                sys.exit(f"the head's GCS did not listen on {address} within {timeout:.0f} s; see {log}")
            time.sleep(0.5)


def wait_nodes(nodes: list[dict], dashboard: str, deadline: float) -> dict[str, str]:
    """{node name: Ray node id} once every started node is alive in Ray's state API."""
    from ray.util.state import list_nodes

    names = {n["name"] for n in nodes}
    seen: dict[str, str] = {}
    while True:
        for node in nodes:
            if not alive(node["pgid"]):
                sys.exit(f"node {node['name']} (process group {node['pgid']}) exited; see {node['log']}")
        try:
            listed = list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
            seen = {n.labels.get(LABEL): n.node_id for n in listed if n.labels.get(LABEL) in names}
        except Exception as err:  # the dashboard is still starting: connection refused, 5xx
            last = f"{type(err).__name__}: {err}"
        else:
            if len(seen) == len(names):
                return seen
            last = f"alive: {sorted(seen)}"
        if time.monotonic() > deadline:
            sys.exit(f"not every node joined ({sorted(names)}) at {dashboard}; last: {last}")
        time.sleep(1)


def wait_job_api(dashboard: str, deadline: float) -> None:
    """A trivial job succeeds: the job API accepts the token and the head's agent runs entrypoints."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    while True:
        try:
            job = client.submit_job(entrypoint="true", submission_id=f"finadapt-cluster-ready-{time.time_ns()}")
        except RuntimeError as err:  # "No available agent to submit job": the agent is still registering
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                sys.exit(f"the job API at {dashboard} refused a trivial job: {err}")
            time.sleep(2)
            continue
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                               JobStatus.STOPPED}:
            if time.monotonic() > deadline:
                sys.exit(f"the trivial job {job} did not finish at {dashboard}: {status}")
            time.sleep(1)
        if status != JobStatus.SUCCEEDED:
            sys.exit(f"the trivial job {job} ended {status}: {client.get_job_logs(job)[-2000:]}")
        return


def wait_cluster(dashboard: str, gcs: str, state: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    nodes = read_nodes(state)
    ids = wait_nodes(nodes, dashboard, deadline)
    wait_job_api(dashboard, deadline)
    head = next(n for n in nodes if n["name"] == "head")
    info = {
        "dashboard_url": dashboard,
        "gcs_address": gcs,
        "auth_mode": "token",
        "token_path": os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token"),
        "temp_root": (state / "temp_root").read_text().strip(),
        # Ray's head writes the Prometheus discovery file of every node's metrics port here
        "head_temp_dir": head["temp_dir"],
        "nodes": [{**n, "node_id": ids[n["name"]], "is_head": n["name"] == "head"} for n in nodes],
    }
    (state / "cluster.json").write_text(json.dumps(info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    gcs = sub.add_parser("gcs")
    gcs.add_argument("--address", required=True)
    gcs.add_argument("--timeout", type=float, default=300)
    gcs.add_argument("--log", default="the head's log")
    gcs.add_argument("--pgid", type=int, help="the head's process group: stop waiting when it is gone")
    cluster = sub.add_parser("cluster")
    cluster.add_argument("--dashboard", required=True)
    cluster.add_argument("--gcs", required=True)
    cluster.add_argument("--state", type=Path, required=True)
    cluster.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    if args.what == "gcs":
        wait_gcs(args.address, args.timeout, args.log, args.pgid)
    else:
        wait_cluster(args.dashboard, args.gcs, args.state, args.timeout)


if __name__ == "__main__":
    main()
