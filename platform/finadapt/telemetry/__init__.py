"""Project metrics: one names table (`names`), one way to record them from any stage (`record`),
a Prometheus runner/query helper for checks (`prometheus`) and the Grafana dashboard generated from
the table (`dashboard`). Importing this package imports neither Ray nor an HTTP client."""
from finadapt.telemetry.names import METRICS, MetricSpec, UnknownMetricError, spec
from finadapt.telemetry.emit import bind, context, record, trial_from_run_name

__all__ = ["METRICS", "MetricSpec", "UnknownMetricError", "bind", "context", "record", "spec",
           "trial_from_run_name"]
