"""The Grafana dashboard of finadapt's metrics, generated from the names table.

It follows the convention of the dashboards Ray writes under `<session>/metrics/grafana/dashboards/`:
a hidden `datasource` variable of type prometheus used by every panel (`${datasource}`), so it works
with the datasource Ray provisions ("Prometheus") or any other, and a `SessionName` variable read
from a node metric every Ray node exports. One row per stage, one panel per metric; counters are
summed over the processes that export them, gauges shown per series.

`python -m finadapt.telemetry.dashboard [PATH]` rewrites `cluster/monitoring/finadapt-dashboard.json`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from finadapt.telemetry.names import METRICS, MetricSpec

UID = "finadaptMetrics"
TITLE = "finadapt"
DEFAULT_PATH = Path(__file__).resolve().parents[3] / "cluster" / "monitoring" / "finadapt-dashboard.json"
ROWS = (("corpus", "Corpus stage"), ("synth", "Synthetic instructions"), ("train", "Training (pretrain, sft)"),
        ("eval", "FLARE evaluation"), ("sweep", "Sweeps (Ray Tune)"))
FILTERS = 'SessionName=~"$SessionName",pipeline=~"$pipeline",trial=~"$trial"'


def _variable(name: str, label: str, query: str, description: str) -> dict:
    return {"allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": "${datasource}", "definition": query, "description": description, "hide": 0,
            "includeAll": True, "label": label, "multi": True, "name": name,
            "query": {"query": query, "refId": f"finadapt-{name}"}, "refresh": 2, "regex": "", "sort": 1,
            "type": "query"}


def templating() -> dict:
    any_metric = "{__name__=~\"ray_finadapt_.+\"}"
    return {"list": [
        {"current": {"selected": False}, "description": "Filter queries of a specific Prometheus type.",
         "hide": 2, "includeAll": False, "multi": False, "name": "datasource", "options": [], "query": "prometheus",
         "refresh": 1, "regex": "", "type": "datasource"},
        _variable("SessionName", "Ray session", "label_values(ray_node_network_receive_speed{}, SessionName)",
                  "Filter queries to specific Ray sessions."),
        _variable("pipeline", "pipeline", f"label_values({any_metric}, pipeline)",
                  "FINADAPT_PIPELINE of the run (default finadapt)."),
        _variable("trial", "trial", f"label_values({any_metric}, trial)",
                  "Ray Tune trial id (empty outside sweeps; All includes those)."),
    ]}


def expression(metric: MetricSpec) -> tuple[str, str]:
    """(PromQL, legend) of a metric's panel: counters summed over processes per tag set; gauges as is."""
    selector = f"{metric.prometheus_name}{{{FILTERS}}}"
    shown = [k for k in ("pipeline", "stage", "trial") + metric.extra_tags if k != "stage" or metric.stage is None]
    legend = " ".join("{{" + k + "}}" for k in shown)
    if metric.kind == "counter":
        return f"sum by ({', '.join(shown)}) ({selector})", legend
    return f"max by ({', '.join(shown)}) ({selector})", legend


def panel(metric: MetricSpec, panel_id: int, x: int, y: int) -> dict:
    expr, legend = expression(metric)
    return {"datasource": "${datasource}", "description": f"{metric.description} ({metric.kind} "
            f"{metric.prometheus_name}; tags {', '.join(metric.tag_keys)})",
            "fieldConfig": {"defaults": {"unit": metric.unit, "custom": {"drawStyle": "line", "lineWidth": 1,
                                                                          "showPoints": "auto"}},
                            "overrides": []},
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y}, "id": panel_id,
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi"}},
            "targets": [{"expr": expr, "legendFormat": legend, "refId": "A", "interval": ""}],
            "title": metric.name.removeprefix("finadapt_"), "type": "timeseries"}


def build_dashboard(metrics: dict[str, MetricSpec] = METRICS) -> dict:
    panels, y, next_id = [], 0, 1
    for group, title in ROWS:
        members = [m for m in metrics.values() if m.group == group]
        if not members:
            continue
        panels.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": next_id,
                       "panels": [], "title": title, "type": "row"})
        next_id, y = next_id + 1, y + 1
        for i, metric in enumerate(members):
            panels.append(panel(metric, next_id, 12 * (i % 2), y + 8 * (i // 2)))
            next_id += 1
        y += 8 * ((len(members) + 1) // 2)
    missing = sorted({m.group for m in metrics.values()} - {g for g, _ in ROWS})
    if missing:
        raise ValueError(f"metrics of group(s) {missing} have no dashboard row in finadapt.telemetry.dashboard.ROWS")
    return {"annotations": {"list": [{"builtIn": 1, "datasource": "-- Grafana --", "enable": True, "hide": True,
                                      "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                                      "type": "dashboard"}]},
            "description": "finadapt stage metrics (generated from finadapt.telemetry.names; do not edit by hand)",
            "editable": True, "graphTooltip": 1, "links": [], "panels": panels, "refresh": "10s",
            "schemaVersion": 27, "tags": ["finadapt"], "templating": templating(),
            "time": {"from": "now-1h", "to": "now"}, "timepicker": {}, "timezone": "", "title": TITLE, "uid": UID,
            "version": 1}


def render(metrics: dict[str, MetricSpec] = METRICS) -> str:
    return json.dumps(build_dashboard(metrics), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
