"""The one table of finadapt's metrics: name, kind, description, tag keys (and the stage a metric
belongs to). Stages record through `finadapt.telemetry.record(name, ...)`, which refuses a name or
tag that is not here; the Grafana dashboard (`dashboard.py`) and the Prometheus scrape test read the
same table, so a metric cannot be renamed in one place and not the others.

Ray exports a metric `x` as `ray_x` (gauges) or `ray_x_total` (counters) on each node's
`--metrics-export-port`; `prometheus_name` gives that name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge"]

COMMON_TAGS = ("pipeline", "stage", "trial")
"""Every metric carries these: pipeline (FINADAPT_PIPELINE or the run's name), stage, trial (a Tune
trial id inside a sweep; empty, i.e. no label in Prometheus, elsewhere)."""
EXTRA_TAGS = ("task", "filter", "reason", "mode", "metric")
"""Per-metric breakdowns: FLARE task, corpus filter, drop/reject reason, evaluation mode and metric."""
STAGES = ("corpus", "synth", "pretrain", "sft", "eval", "sweep")
_NAME = re.compile(r"^finadapt_[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    extra_tags: tuple[str, ...] = ()
    stage: str | None = None  # fixed stage tag; None: the caller names it (training: pretrain or sft)
    unit: str = "short"  # Grafana unit of the dashboard panel

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return COMMON_TAGS + self.extra_tags

    @property
    def group(self) -> str:
        """The dashboard row: the stage, or `train` for the metrics both training stages share."""
        return self.stage or "train"

    @property
    def prometheus_name(self) -> str:
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")


_TABLE = (
    # corpus: counts the driver already computes, recorded when the stage ends
    MetricSpec("finadapt_corpus_documents_in", "counter", "documents read by the corpus stage (before filters)",
               stage="corpus"),
    MetricSpec("finadapt_corpus_documents_out", "counter",
               "documents kept through filters, dedup, decontamination and mixing (packed into the shards)",
               stage="corpus"),
    MetricSpec("finadapt_corpus_filter_drops", "counter", "documents dropped by each quality filter",
               ("filter",), stage="corpus"),
    MetricSpec("finadapt_corpus_duplicates_removed", "counter", "duplicates removed (reason: exact or near)",
               ("reason",), stage="corpus"),
    # synthetic instructions: generations as they stream back, verdicts when the run ends
    MetricSpec("finadapt_synth_generations", "counter", "teacher generations returned by the engine",
               ("task",), stage="synth"),
    MetricSpec("finadapt_synth_generated_tokens", "counter", "tokens written by the teacher", ("task",),
               stage="synth"),
    MetricSpec("finadapt_synth_accepted", "counter", "synthetic samples accepted", ("task",), stage="synth"),
    MetricSpec("finadapt_synth_rejected", "counter", "generations quarantined, per reason", ("task", "reason"),
               stage="synth"),
    # training (stage pretrain or sft), every optimizer step of rank 0
    MetricSpec("finadapt_train_loss", "gauge", "training loss of the latest optimizer step"),
    MetricSpec("finadapt_train_tokens_per_second", "gauge", "real (non-padding) tokens per second",
               unit="short"),
    MetricSpec("finadapt_train_mfu", "gauge", "model FLOPs utilisation of the latest step", unit="percentunit"),
    MetricSpec("finadapt_train_step", "gauge", "optimizer step"),
    # evaluation: rows as the model actors score them, scores when the run is scored
    MetricSpec("finadapt_eval_rows_scored", "counter", "FLARE rows scored by the model actors", ("task",),
               stage="eval"),
    MetricSpec("finadapt_eval_score", "gauge", "primary score per task and mode (metric: its name)",
               ("task", "mode", "metric"), stage="eval"),
    # sweeps: every trial's objective and step, from the Train controller's report callback
    MetricSpec("finadapt_sweep_trial_score", "gauge", "trial objective (validation)", stage="sweep"),
    MetricSpec("finadapt_sweep_trial_step", "gauge", "trial optimizer step", stage="sweep"),
)

METRICS: dict[str, MetricSpec] = {m.name: m for m in _TABLE}


class UnknownMetricError(KeyError):
    """A name or tag that is not in the table: a programming error, raised even outside Ray."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


def spec(name: str) -> MetricSpec:
    if name not in METRICS:
        raise UnknownMetricError(f"metric {name!r} is not in finadapt.telemetry.names (known: "
                                 f"{', '.join(sorted(METRICS))})")
    return METRICS[name]


def check_table() -> list[str]:
    """Problems of the table itself (names, tags, stages); empty when consistent."""
    problems = []
    for m in _TABLE:
        if not _NAME.match(m.name):
            problems.append(f"{m.name}: not finadapt_<snake_case>")
        if m.kind == "counter" and m.name.endswith("_total"):
            problems.append(f"{m.name}: Ray appends _total to counters itself")
        if len(set(m.tag_keys)) != len(m.tag_keys) or not set(m.extra_tags) <= set(EXTRA_TAGS):
            problems.append(f"{m.name}: tags {m.extra_tags} repeat or are outside {EXTRA_TAGS}")
        if m.stage is not None and m.stage not in STAGES:
            problems.append(f"{m.name}: stage {m.stage!r} not in {STAGES}")
        if not m.description:
            problems.append(f"{m.name}: no description")
    if len(METRICS) != len(_TABLE):
        problems.append("a metric name appears twice")
    return problems
