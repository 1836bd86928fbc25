"""Project metrics (issue 14, part 4): one names table used by every stage, and a generated Grafana
dashboard. The real scrape (Debian's Prometheus reading the multi-node cluster's metrics export while a
job runs every instrumented stage) is in test_cluster_local.py, on that module's cluster."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from finadapt import telemetry
from finadapt.telemetry import dashboard, emit, names, prometheus
from finadapt.telemetry.names import METRICS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "platform" / "finadapt"


# ----------------------------------------------------------------------------- the names table
def test_names_table_is_consistent():
    assert names.check_table() == []
    for metric in METRICS.values():
        assert metric.tag_keys[:3] == names.COMMON_TAGS
        assert metric.prometheus_name == "ray_" + metric.name + ("_total" if metric.kind == "counter" else "")


def _recorded_names() -> dict[str, set[str]]:
    """Metric names passed as literals to `telemetry.record(...)`, per module of the package."""
    used: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record"
                    and isinstance(getattr(node.func.value, "id", None), str) and node.func.value.id == "telemetry"):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{path}:{node.lineno}: record() needs a literal name"
                used[first.value].add(str(path.relative_to(PACKAGE)))
    return used


def test_every_metric_in_code_is_in_the_table_and_every_row_is_used():
    used = _recorded_names()
    assert set(used) - set(METRICS) == set(), "names recorded by stage code but missing from names.py"
    assert set(METRICS) - set(used) == set(), "rows of names.py no stage records"
    by_stage = {m.group: {p for n in METRICS if METRICS[n].group == m.group for p in used[n]} for m in METRICS.values()}
    assert by_stage == {"corpus": {"data/pipeline.py"}, "synth": {"synth/pipeline.py"}, "train": {"train/loop.py"},
                        "eval": {"evaluate/predictor.py", "evaluate/runner.py"}, "sweep": {"tune/metrics.py"}}


def test_only_the_telemetry_package_creates_ray_metrics():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "ray.util.metrics" in p.read_text() or "ray.util import metrics" in p.read_text()]
    assert offenders == ["telemetry/emit.py"]


def test_unknown_names_tags_and_stages_raise_even_without_ray():
    with pytest.raises(names.UnknownMetricError, match="finadapt_nope.*not in finadapt.telemetry.names"):
        telemetry.record("finadapt_nope", 1)
    with pytest.raises(names.UnknownMetricError, match=r"no tag\(s\) \['colour'\]"):
        telemetry.record("finadapt_eval_rows_scored", 1, task="fpb", colour="red")
    with pytest.raises(names.UnknownMetricError, match="belongs to stage 'corpus', not 'eval'"):
        telemetry.record("finadapt_corpus_documents_in", 1, stage="eval")
    with pytest.raises(names.UnknownMetricError, match="stage None is not one of"):
        telemetry.record("finadapt_train_loss", 1.0)  # training metrics name their stage
    with pytest.raises(ValueError, match="cannot decrease"):
        telemetry.record("finadapt_corpus_documents_in", -1)


def test_record_is_a_noop_without_ray_and_does_not_import_it():
    code = ("import sys; from finadapt import telemetry\n"
            "assert telemetry.record('finadapt_train_loss', 1.0, stage='sft') is False\n"
            "assert telemetry.record('finadapt_corpus_filter_drops', 3, filter='min_chars') is False\n"
            "assert 'ray' not in sys.modules, 'telemetry imported ray'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_common_tags(monkeypatch):
    bound = emit._bound
    saved = dict(bound)
    bound.clear()
    try:
        monkeypatch.delenv("FINADAPT_PIPELINE", raising=False)
        monkeypatch.delenv("FINADAPT_TRIAL", raising=False)
        assert telemetry.context() == {"pipeline": "finadapt", "trial": ""}
        monkeypatch.setenv("FINADAPT_PIPELINE", "reproduce-cpu")
        assert telemetry.context()["pipeline"] == "reproduce-cpu"
        telemetry.bind(pipeline="from-driver", trial="abc_00002")
        assert telemetry.context() == {"pipeline": "from-driver", "trial": "abc_00002"}
        tags = emit.resolve_tags(METRICS["finadapt_train_step"], {"stage": "sft"})
        assert tags == {"pipeline": "from-driver", "stage": "sft", "trial": "abc_00002"}
    finally:
        bound.clear()
        bound.update(saved)


def test_trial_tag_follows_the_sweeps_run_names():
    """Training workers learn their trial from the run name a sweep gives them (tune/trial.py)."""
    from finadapt.tune.trial import trial_overrides

    name = trial_overrides("/tmp/sweep", "4f2a1_00003")["checkpoint.name"]
    assert telemetry.trial_from_run_name(name) == "4f2a1_00003"
    assert telemetry.trial_from_run_name("pretrain-demo") == ""


# ----------------------------------------------------------------------------- dashboard
def test_committed_dashboard_equals_a_fresh_generation():
    committed = ROOT / "cluster" / "monitoring" / "finadapt-dashboard.json"
    assert committed.read_text() == dashboard.render(), (
        "cluster/monitoring/finadapt-dashboard.json is stale: run "
        "`.venv/bin/python -m finadapt.telemetry.dashboard`")


def test_dashboard_has_a_panel_per_metric_on_rays_datasource_variable():
    board = dashboard.build_dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == "${datasource}" for p in panels)
    exprs = [p["targets"][0]["expr"] for p in panels]
    for metric in METRICS.values():
        assert sum(f"{metric.prometheus_name}{{" in e for e in exprs) == 1, metric.name
    assert {p["title"] for p in board["panels"] if p["type"] == "row"} == {t for _, t in dashboard.ROWS}
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


# ----------------------------------------------------------------------------- prometheus helper
def test_missing_prometheus_names_the_package(monkeypatch):
    monkeypatch.setattr(prometheus.shutil, "which", lambda name: None)
    monkeypatch.setattr(prometheus.os, "access", lambda path, mode: False)
    with pytest.raises(prometheus.PrometheusError) as err:
        prometheus.find_binary()
    assert str(err.value) == ("prometheus not found: install Debian's prometheus package "
                              "(make test does this)")


def test_scrape_config_reads_rays_discovery_file(tmp_path):
    (tmp_path / prometheus.DISCOVERY_FILE).write_text("[]")
    config = prometheus.scrape_config([prometheus.discovery_file(tmp_path)], ["10.0.0.2:8080"], interval_s=1)
    job = config["scrape_configs"][0]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / prometheus.DISCOVERY_FILE)]
    assert job["static_configs"][0]["targets"] == ["10.0.0.2:8080"] and config["global"]["scrape_interval"] == "1s"
    with pytest.raises(prometheus.PrometheusError, match="no Ray service discovery file"):
        prometheus.discovery_file(tmp_path / "nowhere")
