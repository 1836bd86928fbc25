"""One call for users and entrypoints: evaluate a model on FLARE tasks and write the report."""
from __future__ import annotations

from finadapt import storage
from finadapt.config import EvalConfig
from finadapt.evaluate.report import write_report
from finadapt.evaluate.runner import EvalRun, run_evaluation
from finadapt.models import load_tokenizer, model_provenance


def evaluate(cfg: EvalConfig, predictor=None) -> tuple[EvalRun, dict]:
    """Run the evaluation described by `cfg`, write results to `cfg.output_dir`, return (run, results).

    The output location is probed and the model resolved before any data or model work; a task whose
    spec or data is broken is listed in `results["failed_tasks"]` while the others are evaluated."""
    storage.probe_writable(cfg.output_dir)
    path, revision = model_provenance(cfg.model.spec)  # converts the embedded model once, before actors start
    tokenizer = load_tokenizer(cfg.model.spec, cfg.model.trust_remote_code)  # a bad spec fails here, early
    run = run_evaluation(cfg, predictor, keep_going=True)
    results = write_report(run, cfg.output_dir, path, revision, tokenizer)
    return run, results
