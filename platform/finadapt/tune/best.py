"""The sweep's answer: the best trial as `best.yaml` (`finadapt sft -c best.yaml` runs it unchanged)
and its model scored once on the FLARE test splits — the only test read of the whole sweep.
"""
from __future__ import annotations

import json
import logging
import math

from finadapt import storage
from finadapt.config import EvalConfig, dump_config, validate
from finadapt.tasks import split_guard
from finadapt.train.config import SftConfig
from finadapt.tune.config import Sweep
from finadapt.tune.records import TrialRecord
from finadapt.tune.space import apply_params

log = logging.getLogger(__name__)

BEST_FILE = "best.yaml"
TEST_DIR = "best-test"


def objective_of(record: TrialRecord) -> float:
    value = record.final_scores.get("objective", math.nan)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """Highest final objective among trials that did not fail; ties go to the trial that ran more steps."""
    usable = [r for r in records if r.status != "error" and "objective" in r.final_scores]
    if not usable:
        return None
    return max(usable, key=lambda r: (objective_of(r), r.steps_run, r.trial_id))


def best_config(sweep: Sweep, record: TrialRecord) -> SftConfig:
    """Base config + the best params + a fresh run name and output dir of its own."""
    data = apply_params(sweep.base, record.params)
    data = apply_params(data, {"checkpoint.name": f"{sweep.cfg.name}-best",
                               "output_dir": storage.join(sweep.root, "best-run", "out")})
    return validate(SftConfig, data, f"best trial {record.trial_id}")


def write_best(sweep: Sweep, record: TrialRecord) -> str:
    cfg = best_config(sweep, record)
    header = (f"# Best trial {record.trial_id} of sweep {sweep.cfg.name} ({sweep.source}); objective "
              f"{record.final_scores.get('objective')}; params {json.dumps(record.params)}\n"
              f"# Run it with: finadapt sft -c {BEST_FILE}\n")
    path = storage.join(sweep.root, BEST_FILE)
    storage.write_text(path, header + dump_config(cfg))
    return path


def score_on_test(sweep: Sweep, record: TrialRecord) -> dict | None:
    """The best trial's model on the FLARE test splits, once: a finished score is reused on resume."""
    from finadapt.evaluate.api import evaluate
    from finadapt.train.validate import validation_wrapper

    section = sweep.cfg.final_test
    if not section.enabled:
        return None
    if record.model_dir is None:
        log.warning("best trial %s has no exported model; no test score", record.trial_id)
        return None
    out = storage.join(sweep.root, TEST_DIR)
    results_file = storage.join(out, "results.json")
    if storage.exists(results_file):
        saved = json.loads(storage.read_text(results_file))
        if saved.get("model", {}).get("spec") == record.model_dir:
            log.info("test scores of %s already at %s (scored once; not again)", record.model_dir, out)
            return saved
    stage = validate(SftConfig, apply_params(sweep.base, record.params), "best trial")
    cfg = validate(EvalConfig, {
        "model": {"spec": record.model_dir}, "tasks": section.tasks or list(stage.validation.tasks), "split": "test",
        "limit": section.limit, "seed": stage.seed, "modes": list(section.modes),
        "wrapper": section.wrapper or validation_wrapper(stage), "max_length": stage.data.max_length,
        "bootstrap": 0, "ray": {"enabled": False}, "output_dir": out}, f"{sweep.source}: final_test")
    with split_guard.allowed("test"):
        _, results = evaluate(cfg)
    return results
