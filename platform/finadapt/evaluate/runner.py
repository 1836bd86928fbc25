"""FLARE evaluation end to end: load tasks, run the model (Ray Data actor pool or in-process),
parse per mode, compute metrics with confidence intervals, write the report.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from finadapt import telemetry
from finadapt.config import ConfigError, EvalConfig
from finadapt.errors import FinadaptError, InputError
from finadapt.evaluate.metrics import task_metrics
from finadapt.evaluate.parsing import parse_ner_compat, parse_ner_robust, parse_generation
from finadapt.evaluate.predictor import FlarePredictor
from finadapt.tasks import get_task, load_samples, register_task
from finadapt.tasks.selection import select_rows

log = logging.getLogger(__name__)


@dataclass
class EvalRun:
    """Everything a report needs: the rows, raw model outputs, and per task × mode metrics."""

    config: EvalConfig
    rows: list[dict]
    outputs: dict[str, dict]  # id -> raw model output
    scores: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    model_info: dict = field(default_factory=dict)
    failed: list[dict] = field(default_factory=list)  # {"task", "error"}: tasks whose spec or data was broken


def load_rows(cfg: EvalConfig, failures: list[dict] | None = None) -> list[dict]:
    """Rows of every task. With `failures` (a list), a task whose spec or data is broken is recorded
    there ({"task", "error"}) and the others still load; without it the first such error is raised."""
    names: list[str] = list(cfg.tasks)
    problems: list[tuple[str, FinadaptError]] = []
    for spec_path in cfg.task_files:
        try:
            names.append(register_task(spec_path).name)
        except FinadaptError as err:
            problems.append((spec_path, err))
    unknown = sorted(set(cfg.task_limits) - set(names) - {p for p, _ in problems})
    if unknown and not problems:
        raise ConfigError(f"task_limits names tasks that are not evaluated: {unknown} (tasks: {names})")
    rows = []
    for name in dict.fromkeys(names):
        try:
            task = get_task(name)
            limit = cfg.task_limits.get(name, cfg.limit)
            samples = select_rows(name, load_samples(name, cfg.split), limit, cfg.seed)
            if not samples:
                raise InputError(f"task {name!r} has no samples in split {cfg.split!r}")
        except FinadaptError as err:
            problems.append((name, err))
            continue
        for sample in samples:
            rows.append({**sample.to_row(), "kind": task.kind})
    if problems and (failures is None or not rows):
        if len(problems) == 1:
            raise problems[0][1]
        raise InputError("no task could be loaded: " + "; ".join(f"{t}: {e}" for t, e in problems))
    for task, err in problems:
        log.error("task %s skipped: %s", task, err)
        failures.append({"task": task, "error": str(err), "type": type(err).__name__})
    return rows


def predictor_kwargs(cfg: EvalConfig) -> dict:
    gen = cfg.generation
    return dict(
        model_spec=cfg.model.spec, dtype=cfg.model.dtype, device=cfg.model.device,
        trust_remote_code=cfg.model.trust_remote_code, wrapper=cfg.wrapper, modes=tuple(cfg.modes),
        max_length=cfg.max_length, token_budget=cfg.token_budget, max_batch=gen.max_batch,
        max_new_tokens={k: gen.for_kind(k) for k in ("classification", "headlines", "ner")},
        telemetry_context=telemetry.context(),
    )


def predict_in_process(cfg: EvalConfig, rows: list[dict], predictor: FlarePredictor | None = None) -> list[dict]:
    """No Ray: the same predictor over batches, with a progress bar."""
    import pandas as pd
    from tqdm import tqdm

    predictor = predictor or FlarePredictor(**predictor_kwargs(cfg))
    outputs: list[dict] = []
    size = cfg.batch_rows
    for start in tqdm(range(0, len(rows), size), desc="evaluating", unit="batch"):
        outputs.extend(predictor(pd.DataFrame(rows[start:start + size])).to_dict("records"))
    return outputs


def predict_with_ray(cfg: EvalConfig, rows: list[dict]) -> list[dict]:
    """Ray Data: `map_batches` over an actor pool of model-holding FlarePredictors (CPU or GPU)."""
    import ray

    from finadapt.ray_connect import connect

    connect(cfg.ray)
    # Sorting by prompt length first makes every actor batch length-homogeneous (less padding).
    ordered = sorted(rows, key=lambda r: (r["kind"], len(r["query"])))
    ds = ray.data.from_items(ordered)
    ds = ds.map_batches(
        FlarePredictor,
        fn_constructor_kwargs=predictor_kwargs(cfg),
        batch_size=cfg.batch_rows,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=cfg.ray.workers),
        num_cpus=cfg.ray.cpus_per_worker,
        num_gpus=cfg.ray.gpus_per_worker or None,
    )
    return [dict(r) for r in ds.take_all()]


def parse_outputs(cfg: EvalConfig, rows: list[dict], outputs: dict[str, dict]) -> dict[str, list[dict]]:
    """Per mode, rows with `pred` / `pred_tags` filled in (choice: argmax label; compat/robust: parsed text)."""
    per_mode: dict[str, list[dict]] = {}
    for mode in cfg.modes:
        scored = []
        for row in rows:
            out = outputs[row["id"]]
            kind = row["kind"]
            if mode == "choice":
                if kind == "ner":  # NER always generates; its "choice" column is its compat parse
                    tags = parse_ner_compat(out["generation"], row["text"], list(row["tokens"]),
                                            reproduce_last_token_quirk=cfg.ner_last_token_quirk)
                    scored.append({**row, "pred": None, "pred_tags": tags})
                else:
                    scored.append({**row, "pred": int(out["choice_pred"]), "pred_tags": []})
            elif kind == "ner" and mode == "compat":
                tags = parse_ner_compat(out["generation"], row["text"], list(row["tokens"]),
                                        reproduce_last_token_quirk=cfg.ner_last_token_quirk)
                scored.append({**row, "pred": None, "pred_tags": tags})
            elif kind == "ner":
                tags = parse_ner_robust(out["generation"], row["text"], list(row["tokens"]))
                scored.append({**row, "pred": None, "pred_tags": tags})
            else:
                scored.append({**row, **parse_generation(kind, mode, out["generation"], row)})
        per_mode[mode] = scored
    return per_mode


def rescore_primary(metric: str, rows: list[dict], cfg: EvalConfig) -> dict:
    """A classification task scored by another metric (accuracy, f1_macro): its own CI and floor."""
    import numpy as np

    from finadapt.evaluate.metrics import bootstrap_ci, classification_metrics

    n_labels = max(len(rows[0]["choices"]), max(int(r["gold"]) for r in rows) + 1)
    gold = np.asarray([int(r["gold"]) for r in rows])
    pred = np.asarray([-1 if r["pred"] is None else int(r["pred"]) for r in rows])
    value = classification_metrics(gold.tolist(), [None if p < 0 else int(p) for p in pred], n_labels)[metric]
    ci = bootstrap_ci(lambda g, q: classification_metrics(g.tolist(), [None if p < 0 else int(p) for p in q],
                                                          n_labels)[metric],
                      gold, pred, n_boot=cfg.bootstrap, seed=cfg.seed)
    majority = int(np.bincount(gold, minlength=n_labels).argmax())
    floor = classification_metrics(gold.tolist(), [majority] * len(gold), n_labels)[metric]
    return {"primary": metric, "score": value, "ci95": [ci[0], ci[1]], "majority_floor": floor}


def score(cfg: EvalConfig, rows: list[dict], outputs: dict[str, dict]) -> list[dict]:
    results = []
    for mode, scored in parse_outputs(cfg, rows, outputs).items():
        for task in dict.fromkeys(r["task"] for r in scored):
            definition = get_task(task)
            task_rows = [r for r in scored if r["task"] == task]
            metrics = task_metrics(definition.kind, task_rows, n_boot=cfg.bootstrap, seed=cfg.seed)
            if definition.metric in metrics and definition.metric != metrics["primary"]:
                metrics.update(rescore_primary(definition.metric, task_rows, cfg))
            n_missing = sum(1 for r in task_rows if definition.kind != "ner" and r["pred"] is None)
            results.append({
                "task": task, "mode": mode, **metrics, "n_missing": n_missing,
                "flare_exact_rows": sum(bool(r["flare_exact"]) for r in task_rows),
                "truncated_prompts": sum(bool(outputs[r["id"]]["truncated"]) for r in task_rows),
                "empty_generations": sum(not outputs[r["id"]]["generation"] for r in task_rows)
                if mode != "choice" or definition.kind == "ner" else None,
                "note": "NER is always generated; this column is its compat parse"
                if mode == "choice" and definition.kind == "ner" else "",
            })
    return results


def publish_scores(scores: list[dict]) -> None:
    """Each task x mode's primary score as a Ray metric (a no-op without Ray)."""
    for entry in scores:
        if entry["score"] == entry["score"]:  # NaN: a task without rows has no score to show
            telemetry.record("finadapt_eval_score", entry["score"], task=entry["task"], mode=entry["mode"],
                             metric=entry["primary"])


def run_evaluation(cfg: EvalConfig, predictor: FlarePredictor | None = None, keep_going: bool = False) -> EvalRun:
    """Run and score (no files written; see `report.write_report`). With `keep_going`, tasks whose
    spec or data is broken are listed in `run.failed` and the others are evaluated."""
    t0 = time.perf_counter()
    failed: list[dict] = []
    rows = load_rows(cfg, failed if keep_going else None)
    t_load = time.perf_counter() - t0
    log.info("evaluating %d rows of %s in modes %s", len(rows), sorted({r["task"] for r in rows}), cfg.modes)
    if cfg.ray.enabled and predictor is None:
        outputs = predict_with_ray(cfg, rows)
    else:
        outputs = predict_in_process(cfg, rows, predictor)
    t_predict = time.perf_counter() - t0 - t_load
    by_id = {o["id"]: o for o in outputs}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} rows came back without a model output, e.g. {missing[:3]}")
    run = EvalRun(cfg, rows, by_id, failed=failed)
    run.scores = score(cfg, rows, by_id)
    publish_scores(run.scores)
    for entry in run.scores:  # model seconds per task (choice + generation), for the report
        ids = [r["id"] for r in rows if r["task"] == entry["task"]]
        entry["model_seconds"] = sum(by_id[i]["choice_seconds"] + by_id[i]["generate_seconds"] for i in ids)
        entry["generated_tokens"] = sum(int(by_id[i]["generated_tokens"]) for i in ids)
    run.seconds = {"load": t_load, "predict": t_predict, "total": time.perf_counter() - t0}
    return run
