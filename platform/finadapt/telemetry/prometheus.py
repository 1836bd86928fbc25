"""Run Debian's Prometheus against a Ray cluster's metrics export, and read the project's metrics
back over its HTTP API (`/api/v1/query`, `/api/v1/series`, `/api/v1/label/__name__/values`).

Why a real Prometheus: Ray exports custom metrics only through its per-node agents, counters as
`ray_<name>_total`, and drops a gauge from the export about two report intervals (~20 s) after its
last update (finished worker or not) while counters stay. A scraper that runs while the job runs and
keeps the samples is how they are really seen, so the checks query `last_over_time(...[1h])`.

The scrape config reads the file-based discovery Ray keeps under its temp dir
(`<temp dir>/prom_metrics_service_discovery.json`, every node's metrics port, written by the head)
or static `host:port` targets.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from finadapt.errors import FinadaptError
from finadapt.telemetry.names import METRICS, MetricSpec

MISSING = "prometheus not found: install Debian's prometheus package (make test does this)"
DISCOVERY_FILE = "prom_metrics_service_discovery.json"


class PrometheusError(FinadaptError, RuntimeError):
    """Prometheus is missing, did not start, or its API answered an error."""

    exit_code = 1


def find_binary() -> str:
    """`prometheus` on PATH or Debian's /usr/bin/prometheus; a clear error otherwise."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if not found:
        raise PrometheusError(MISSING)
    return found


def discovery_file(ray_temp_dir: str | Path) -> Path:
    """The file-based service discovery Ray's head writes (every node's metrics export address)."""
    path = Path(ray_temp_dir) / DISCOVERY_FILE
    if not path.exists():
        raise PrometheusError(f"{path}: no Ray service discovery file (is a Ray head running with "
                              f"--temp-dir={ray_temp_dir}?)")
    return path


def scrape_config(discovery: list[str | Path] = (), targets: list[str] = (), interval_s: float = 1.0) -> dict:
    """A Prometheus config: Ray's discovery files and/or static targets, scraped every `interval_s`."""
    if not discovery and not targets:
        raise PrometheusError("scrape_config: give Ray discovery files or static host:port targets")
    job: dict = {"job_name": "ray", "honor_labels": True}
    if discovery:
        job["file_sd_configs"] = [{"files": [str(p) for p in discovery], "refresh_interval": "5s"}]
    if targets:
        job["static_configs"] = [{"targets": list(targets), "labels": {"job": "ray"}}]
    interval = f"{max(interval_s, 0.1):g}s"
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": [job]}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the tests' servers use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Prometheus:
    """A Prometheus server of our own: free port, own storage dir, stopped by its pid only."""

    config: dict
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="finadapt-prom-")))
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout_s: float = 60) -> "Prometheus":
        binary = find_binary()
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
             "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise PrometheusError(f"prometheus not ready on {self.url} after {timeout_s:g} s: {self._log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-1500:]
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------ HTTP API
    def api(self, path: str, **params: str) -> object:
        """GET /api/v1/<path>; the `data` of a success answer, else PrometheusError with its message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise PrometheusError(f"{url}: {err}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{url}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def series(self, match: str) -> list[dict]:
        return self.api("series", **{"match[]": match})

    def metric_names(self) -> list[str]:
        return self.api("label/__name__/values")

    def targets_up(self) -> list[dict]:
        return self.query('up{job="ray"}')

    def wait_for(self, names: list[str], timeout_s: float = 120, poll_s: float = 1.0) -> list[str]:
        """Wait until every Prometheus name in `names` has been scraped; returns the ones still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = sorted(set(names) - set(self.metric_names()))
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(poll_s)


# ---------------------------------------------------------------------- reading the project's metrics
def project_samples(prom: Prometheus, metrics: dict[str, MetricSpec] = METRICS, window: str = "1h") -> list[dict]:
    """Every series of every project metric as Prometheus returns it: the table's tags (empty ones
    absent, as Prometheus drops empty labels), all labels, and the last value within `window`."""
    rows = []
    for metric in metrics.values():
        for sample in prom.query(f"last_over_time({metric.prometheus_name}[{window}])"):
            labels = sample["metric"]
            rows.append({"name": metric.name, "prometheus_name": metric.prometheus_name, "kind": metric.kind,
                         "tags": {k: labels[k] for k in metric.tag_keys if k in labels},
                         "value": float(sample["value"][1]), "labels": labels})
    return sorted(rows, key=lambda r: (r["name"], sorted(r["tags"].items()), r["labels"].get("instance", ""),
                                       r["labels"].get("WorkerId", "")))


def write_cluster_metrics(path: str | Path, samples: list[dict], about: dict) -> dict:
    """`results/cluster-metrics.json`: what was scraped (`about`: the job, nodes, Prometheus version),
    every project metric's series, and the table's names that came back without any."""
    seen = {s["name"] for s in samples}
    document = {**about, "metrics": samples, "names_in_table": sorted(METRICS),
                "names_without_series": sorted(set(METRICS) - seen)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return document
