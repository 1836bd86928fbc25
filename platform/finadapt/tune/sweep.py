"""One call for the CLI, `pipelines/sweep.py` and tests: fit (or resume) the sweep, write the report,
`best.yaml` and the best model's test scores."""
from __future__ import annotations

import logging

from finadapt import storage
from finadapt.tune import best as best_mod
from finadapt.tune.config import Sweep
from finadapt.tune.runner import fit

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def run_sweep(sweep: Sweep, resume: bool = False) -> dict:
    """Returns {root, records, best_trial_id, best_yaml, test_results, report_dir, ...}."""
    from finadapt.tune.report import write_sweep_report

    records, facts = fit(sweep, resume)
    best = best_mod.best_record(records)
    best_yaml = best_mod.write_best(sweep, best) if best else None
    test_results = best_mod.score_on_test(sweep, best) if best else None
    tasks = list(best_mod.best_config(sweep, best).validation.tasks) if best else None
    info = {"config": sweep.source, "space": sweep.space.source, "searcher": sweep.cfg.searcher,
            "scheduler": sweep.cfg.scheduler.model_dump(), "num_samples": sweep.cfg.num_samples,
            "max_concurrent_trials": sweep.cfg.max_concurrent_trials, "objective": sweep.cfg.objective.model_dump(),
            "best_yaml": best_yaml, **{k: v for k, v in facts.items()}}
    report_dir = storage.join(sweep.root, REPORT_DIR)
    write_sweep_report(records, report_dir, objective="objective", tasks=tasks,
                       best_trial_id=best.trial_id if best else None, test_results=test_results,
                       title=f"Sweep {sweep.cfg.name}", sweep_info=info)
    if best is None:
        log.warning("no trial finished with a score; no best.yaml")
    return {"root": sweep.root, "records": records, "best_trial_id": best.trial_id if best else None,
            "best_yaml": best_yaml, "test_results": test_results, "report_dir": report_dir, **facts}
