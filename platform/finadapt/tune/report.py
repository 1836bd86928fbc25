"""Sweep outputs a person reads: every trial as CSV + Markdown, a summary of what the sweep found
(best config, spread, effect of synthetic ratio and learning rate, an explicit "no clear effect"
when the differences are noise-sized), plots, and sweep.json with the records and the numbers.

Everything is rendered from TrialRecords (no Ray), so a report can be rebuilt from records.jsonl.
A trial's scores are its `final_scores`, filled in from its last evaluation report (the last history
entry carrying a `val_*` key) for any key final_scores lacks. NaN stays NaN ("-" in Markdown, "NaN"
in CSV, null in sweep.json); errored trials are listed but never ranked or used in the statistics.
"""
from __future__ import annotations

import csv
import io
import json
import math
import numbers
import statistics
from dataclasses import asdict
from typing import Any

from finadapt import storage
from finadapt.errors import InputError
from finadapt.tune.records import TrialRecord

NON_TASK_KEYS = {"val_score", "val_loss", "val_seconds"}  # val_<key> that are not tasks
RATIO_LEAVES = ("synthetic_ratio",)
LR_LEAVES = ("lr", "learning_rate")
Z_95 = 1.96  # two-sided 95% normal quantile, for the "no clear effect" rules below
PUBLISHED_PREFIXES = ("GPT-4", "FinMA")
NO_EFFECT = "no clear effect at this scale"


# ---------------------------------------------------------------- per-trial values

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_float(value: Any) -> float:
    """A score as float; None or anything non-numeric is NaN (shown as such, never as 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)  # numpy scalars
        except (TypeError, ValueError):
            return math.nan
    return float(value)


def _is_score_key(key: Any, objective: str) -> bool:
    return str(key).startswith("val_") or key == objective


def last_evaluation(record: TrialRecord, objective: str = "val_score") -> dict:
    """The last history entry that carries a validation score (`val_*` or the objective), or {}."""
    for entry in reversed(record.history):
        if any(_is_score_key(k, objective) for k in entry):
            return entry
    return {}


def trial_scores(record: TrialRecord, objective: str = "val_score") -> dict[str, float]:
    """final_scores, with keys it lacks taken from the last evaluation report."""
    scores = {k: _as_float(v) for k, v in last_evaluation(record, objective).items() if _is_score_key(k, objective)}
    scores.update({k: _as_float(v) for k, v in record.final_scores.items()})
    return scores


def infer_tasks(records: list[TrialRecord], objective: str) -> list[str]:
    """Task names from `val_<task>` keys seen in any trial (NON_TASK_KEYS and the objective excluded)."""
    seen: dict[str, None] = {}
    for record in records:
        for key in trial_scores(record, objective):
            if key.startswith("val_") and key not in NON_TASK_KEYS and key != objective:
                seen[key[len("val_"):]] = None
    return sorted(seen)


def find_param(records: list[TrialRecord], leaves: tuple[str, ...], prefer: str | None = None) -> str | None:
    """The dotted param key whose last part is one of `leaves` (`prefer` wins if present), or None."""
    keys = list(dict.fromkeys(k for r in records for k in r.params))
    if prefer and prefer in keys:
        return prefer
    return next((k for k in keys if k.rsplit(".", 1)[-1] in leaves), None)


def _param_number(record: TrialRecord, key: str) -> float:
    """The trial's value of a numeric param (NaN when the trial lacks it); a non-number is an input error."""
    value = record.params.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"trial {record.trial_id}: param {key}={value!r} is not a number")
    return float(value)


# ---------------------------------------------------------------- statistics

def describe(values: list[float]) -> dict:
    """n, min, max, mean, stdev of the finite values (NaN where undefined)."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return {"n": 0, "min": math.nan, "max": math.nan, "mean": math.nan, "stdev": math.nan}
    return {"n": len(vals), "min": min(vals), "max": max(vals), "mean": statistics.fmean(vals),
            "stdev": statistics.stdev(vals) if len(vals) > 1 else math.nan}


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation; NaN when either side is constant or there are fewer than 2 points."""
    if len(xs) < 2:
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def trend_effect(xs: list[float], ys: list[float]) -> dict:
    """Spearman rho of x vs score with n, and a verdict: under no effect rho*sqrt(n-1) is about
    standard normal, so |rho|*sqrt(n-1) < 1.96 is "no clear effect"."""
    pairs = [(x, y) for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
    n = len(pairs)
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    if n < 3 or len({p[0] for p in pairs}) < 2:
        return {"rule": "spearman", "rho": rho, "n": n, "z": math.nan, "verdict": "too_few"}
    z = abs(rho) * math.sqrt(n - 1) if _finite(rho) else 0.0
    return {"rule": "spearman", "rho": rho, "n": n, "z": z,
            "verdict": "no_clear_effect" if z < Z_95 else "effect"}


def group_effect(xs: list[float], ys: list[float]) -> dict:
    """Mean score per x value, and a verdict comparing the spread between groups with the spread
    within them: no clear effect when the best and worst group means differ by at most two standard
    errors of that difference (pooled within-group SD * sqrt(1/n_best + 1/n_worst)). Without any
    repeated x value there is no within-group spread, so the Spearman rule decides instead."""
    groups: dict[float, list[float]] = {}
    for x, y in zip(xs, ys):
        if _finite(x) and _finite(y):
            groups.setdefault(x, []).append(y)
    rows = [{"value": x, "n": len(v), "mean": statistics.fmean(v),
             "stdev": statistics.stdev(v) if len(v) > 1 else math.nan} for x, v in sorted(groups.items())]
    df = sum(r["n"] - 1 for r in rows)
    pooled = math.sqrt(sum((len(v) - 1) * statistics.variance(v) for v in groups.values() if len(v) > 1) / df) \
        if df > 0 else math.nan
    out: dict = {"groups": rows, "pooled_sd": pooled, "df": df, "between": math.nan, "threshold": math.nan,
                 "best": None, "worst": None, "trend": trend_effect(xs, ys)}
    if len(rows) < 2:
        return {**out, "rule": "groups", "verdict": "too_few"}
    best, worst = max(rows, key=lambda r: r["mean"]), min(rows, key=lambda r: r["mean"])
    out.update(best=best["value"], worst=worst["value"], between=best["mean"] - worst["mean"])
    if df == 0:
        return {**out, "rule": "spearman", "verdict": out["trend"]["verdict"]}
    threshold = 2 * pooled * math.sqrt(1 / best["n"] + 1 / worst["n"])
    verdict = "no_clear_effect" if out["between"] <= threshold else "effect"
    return {**out, "rule": "groups", "threshold": threshold, "verdict": verdict}


# ---------------------------------------------------------------- formatting

def _fmt(value: Any, digits: int = 4) -> str:
    """Markdown cell: NaN/None as "-", floats compact."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _score(value: float) -> str:
    return "-" if not _finite(value) else f"{value:.4f}"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return str(value)


def _md_text(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _strict_json(value: Any) -> Any:
    """NaN/inf -> null, so sweep.json is standard JSON any tool reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if hasattr(value, "item"):
        return _strict_json(value.item())
    return value


# ---------------------------------------------------------------- tables

def rank_trials(records: list[TrialRecord], objective: str, mode: str = "max") -> list[dict]:
    """One row per trial, best first: rankable trials (not errored, finite objective) by objective,
    then the rest by trial id with rank None."""
    rows = []
    for record in records:
        scores = trial_scores(record, objective)
        value = scores.get(objective, math.nan)
        rows.append({"record": record, "scores": scores, "objective": value,
                     "rankable": record.status != "error" and _finite(value)})
    sign = -1 if mode == "max" else 1
    ranked = sorted((r for r in rows if r["rankable"]), key=lambda r: (sign * r["objective"], r["record"].trial_id))
    rest = sorted((r for r in rows if not r["rankable"]), key=lambda r: r["record"].trial_id)
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i
    for row in rest:
        row["rank"] = None
    return ranked + rest


def trials_csv(rows: list[dict], params: list[str], tasks: list[str], objective: str, best_id: str | None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "trial_id", "best", *params, *(f"val_{t}" for t in tasks), objective,
                     "steps_run", "planned_steps", "stopped_early", "status", "wall_seconds", "error"])
    for row in rows:
        r: TrialRecord = row["record"]
        writer.writerow([_csv_cell(row["rank"]), r.trial_id, "yes" if r.trial_id == best_id else "no",
                         *(_csv_cell(r.params.get(p)) for p in params),
                         *(_csv_cell(row["scores"].get(f"val_{t}", math.nan)) for t in tasks),
                         _csv_cell(row["objective"]), r.steps_run, r.planned_steps,
                         "yes" if r.status == "stopped_early" else "no", r.status, f"{r.wall_seconds:.1f}",
                         _csv_cell(r.error)])
    return buf.getvalue()


def trials_markdown(rows: list[dict], params: list[str], tasks: list[str], objective: str,
                    best_id: str | None, title: str) -> str:
    lines = [f"# Sweep trials{': ' + title if title else ''}", "",
             f"Sorted by `{objective}` (last validation evaluation); **best** marked; `-` = no score (NaN).", "",
             "| rank | trial | " + " | ".join(f"`{p}`" for p in params) + (" | " if params else "")
             + "".join(f"val {t} | " for t in tasks) + f"{objective} | steps run / planned | stopped early | "
             "status | wall s |",
             "|" + "---|" * (len(params) + len(tasks) + 7)]
    for row in rows:
        r: TrialRecord = row["record"]
        mark = f"**{r.trial_id}** (best)" if r.trial_id == best_id else r.trial_id
        cells = [_fmt(row["rank"]), mark, *(_fmt(r.params.get(p)) for p in params),
                 *(_score(row["scores"].get(f"val_{t}", math.nan)) for t in tasks), _score(row["objective"]),
                 f"{r.steps_run} / {r.planned_steps}", "yes" if r.status == "stopped_early" else "no",
                 r.status, f"{r.wall_seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [row["record"] for row in rows if row["record"].error]
    if errors:
        lines += ["", "## Errors", ""] + [f"- `{r.trial_id}`: {_md_text(r.error)}" for r in errors]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- summary

def _effect_sentence(name: str, effect: dict) -> str:
    """One sentence per effect; the "no clear effect" wording comes only from the computed verdict."""
    verdict = effect["verdict"]
    if effect.get("rule") == "groups" and "groups" in effect:
        if verdict == "too_few":
            return f"{name}: too few trials with a score to compare values."
        detail = (f"best value {_fmt(effect['best'])} vs worst {_fmt(effect['worst'])}: means differ by "
                  f"{_fmt(effect['between'], 3)}; two standard errors from the within-group spread = "
                  f"{_fmt(effect['threshold'], 3)} (pooled SD {_fmt(effect['pooled_sd'], 3)}, df {effect['df']})")
        if verdict == "no_clear_effect":
            return f"{name}: {NO_EFFECT} ({detail})."
        return f"{name}: the score depends on it ({detail})."
    trend = effect.get("trend", effect)
    if verdict == "too_few":
        return f"{name}: too few trials (n = {trend['n']}) or values to tell."
    detail = f"Spearman ρ = {_fmt(trend['rho'], 3)}, n = {trend['n']}, |ρ|·√(n−1) = {_fmt(trend['z'], 3)}"
    if verdict == "no_clear_effect":
        return f"{name}: {NO_EFFECT} ({detail} < {Z_95})."
    direction = "higher" if trend["rho"] > 0 else "lower"
    return f"{name}: {direction} values scored higher ({detail} ≥ {Z_95})."


def _published_rows(tasks: list[str]) -> tuple[list[tuple[str, dict]], str]:
    from finadapt.evaluate.report import PUBLISHED_KEYS, published_results

    pub = published_results()
    rows = [(m["model"] + f" ({m['source']})", {t: m.get(PUBLISHED_KEYS.get(t, t)) for t in tasks})
            for m in pub["models"] if m["model"].startswith(PUBLISHED_PREFIXES)]
    return rows, pub.get("caveat", "")


def flare_test_rows(test_results: dict) -> list[tuple[str, dict[str, float]]]:
    """(label, task -> score) from an evaluation results dict (`scores`: [{task, mode, score}]),
    one row per mode, or from a plain {task: score} mapping."""
    if isinstance(test_results.get("scores"), list):
        by_mode: dict[str, dict[str, float]] = {}
        for s in test_results["scores"]:
            if not isinstance(s, dict) or "task" not in s:
                raise InputError(f"test_results: score entry {s!r} has no 'task'")
            by_mode.setdefault(str(s.get("mode", "")), {})[s["task"]] = _as_float(s.get("score"))
        return [(f"best trial ({mode})" if mode else "best trial", vals) for mode, vals in by_mode.items()]
    return [("best trial", {str(k): _as_float(v) for k, v in test_results.items()})]


def summary_markdown(ctx: dict) -> str:
    s = ctx["summary"]
    lines = [f"# Sweep summary{': ' + ctx['title'] if ctx['title'] else ''}", ""]
    if ctx["sweep_info"]:
        lines += [f"- {k}: {_md_text(json.dumps(v) if isinstance(v, (dict, list)) else v)}"
                  for k, v in ctx["sweep_info"].items()] + [""]
    counts = s["status_counts"]
    lines += [f"{s['trials']} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f". Objective `{ctx['objective']}` "
              f"({'higher' if ctx['mode'] == 'max' else 'lower'} is better), the last validation evaluation of each trial.", ""]
    best = ctx["best_row"]
    lines += ["## Best configuration", ""]
    if best is None:
        lines += ["No trial produced a finite objective.", ""]
    else:
        r: TrialRecord = best["record"]
        lines += [f"Trial `{r.trial_id}`: {ctx['objective']} = {_score(best['objective'])} "
                  f"({r.status}, {r.steps_run}/{r.planned_steps} steps, {r.wall_seconds:.0f} s); model `{r.model_dir}`.", ""]
        lines += [f"- `{k}`: {_fmt(v, 6)}" for k, v in r.params.items()]
        lines += [f"- val {t}: {_score(best['scores'].get(f'val_{t}', math.nan))}" for t in ctx["tasks"]] + [""]
    spread = s["objective_spread"]
    lines += ["## Spread of the objective across trials", "",
              f"n = {spread['n']} scored trials (errored ones excluded): min {_score(spread['min'])}, max "
              f"{_score(spread['max'])}, mean {_score(spread['mean'])}, stdev {_score(spread['stdev'])}. "
              f"{s['stopped_early_scored']} of them were stopped early by the scheduler and enter with their last "
              "score before stopping.", ""]
    lines += ["## Effect of the synthetic ratio", ""]
    ratio = s["ratio_effect"]
    if ratio is None:
        lines += ["The sweep has no synthetic-ratio parameter: no ratio analysis, score_vs_ratio.png skipped.", ""]
    else:
        series = [ctx["objective"], *(f"val_{t}" for t in ctx["tasks"])]
        lines += [f"Mean score per value of `{ratio['param']}` (n = trials with a score):", "",
                  "| ratio | n | " + " | ".join(series) + " |", "|" + "---|" * (len(series) + 2)]
        for value in ratio["values"]:
            cells = [_score(ratio["series"][name]["means"].get(value, math.nan)) for name in series]
            n = ratio["series"][ctx["objective"]]["counts"].get(value, 0)
            lines.append(f"| {_fmt(value)} | {n} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {_effect_sentence(f'`{name}`', ratio['series'][name]['effect'])}" for name in series] + [""]
    lines += ["## Effect of the learning rate", ""]
    lr = s["lr_effect"]
    if lr is None:
        lines += ["The sweep has no learning-rate parameter: no lr analysis, score_vs_lr.png skipped.", ""]
    else:
        lines += [f"Rank correlation of log10(`{lr['param']}`) with each score "
                  f"(range {_fmt(lr['min'])} – {_fmt(lr['max'])}):", ""]
        lines += [f"- {_effect_sentence(f'`{name}`', eff)}" for name, eff in lr["series"].items()] + [""]
    if ctx["test_rows"]:
        tasks = list(dict.fromkeys(t for _, vals in ctx["test_rows"] for t in vals))
        pub_rows, caveat = _published_rows(tasks)
        lines += ["## Best model on the FLARE test splits, beside published numbers", "",
                  "| model | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
        for label, vals in ctx["test_rows"]:
            lines.append(f"| **{label}** | " + " | ".join(_score(vals.get(t, math.nan)) for t in tasks) + " |")
        for label, vals in pub_rows:
            lines.append(f"| {label} | " + " | ".join(_score(_as_float(vals.get(t))) for t in tasks) + " |")
        lines += ["", f"Caveat: {caveat}", ""]
    if s["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in s["notes"]] + [""]
    return "\n".join(lines)


def _series_effects(records: list[TrialRecord], rows: list[dict], key: str, series: list[str],
                    log: bool) -> dict:
    """Per series (objective, val_<task>): x values and scores of the scored, non-errored trials."""
    out = {}
    for name in series:
        xs, ys = [], []
        for row in rows:
            r = row["record"]
            x, y = _param_number(r, key), row["scores"].get(name, math.nan)
            if r.status == "error" or not (_finite(x) and _finite(y)) or (log and x <= 0):
                continue
            xs.append(math.log10(x) if log else x)
            ys.append(y)
        out[name] = {"x": xs, "y": ys}
    return out


def compute_summary(rows: list[dict], records: list[TrialRecord], objective: str, tasks: list[str]) -> dict:
    """The numbers summary.md states and sweep.json keeps."""
    scored = [r for r in rows if r["rankable"]]
    counts = {s: sum(1 for r in records if r.status == s) for s in ("completed", "stopped_early", "error")}
    summary: dict = {"trials": len(records), "status_counts": counts,
                     "objective_spread": describe([r["objective"] for r in scored]),
                     "stopped_early_scored": sum(1 for r in scored if r["record"].status == "stopped_early"),
                     "ratio_effect": None, "lr_effect": None, "notes": []}
    series = [objective, *(f"val_{t}" for t in tasks)]
    ratio_key = find_param(records, RATIO_LEAVES, prefer="data.synthetic_ratio")
    if ratio_key is None:
        summary["notes"].append("no synthetic-ratio parameter in this sweep: score_vs_ratio.png not written")
    else:
        data = _series_effects(records, rows, ratio_key, series, log=False)
        per_series = {}
        for name, d in data.items():
            effect = group_effect(d["x"], d["y"])
            per_series[name] = {"effect": effect, "means": {g["value"]: g["mean"] for g in effect["groups"]},
                                "counts": {g["value"]: g["n"] for g in effect["groups"]}}
        values = sorted({x for d in data.values() for x in d["x"]})
        summary["ratio_effect"] = {"param": ratio_key, "values": values, "series": per_series}
    lr_key = find_param(records, LR_LEAVES, prefer="optim.lr")
    if lr_key is None:
        summary["notes"].append("no learning-rate parameter in this sweep: score_vs_lr.png not written")
    else:
        data = _series_effects(records, rows, lr_key, series, log=True)
        lrs = [10 ** x for x in data[objective]["x"]]
        summary["lr_effect"] = {"param": lr_key, "min": min(lrs) if lrs else math.nan,
                                "max": max(lrs) if lrs else math.nan,
                                "series": {name: trend_effect(d["x"], d["y"]) for name, d in data.items()}}
    return summary


# ---------------------------------------------------------------- plots

def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def score_vs_param_png(rows: list[dict], key: str, series: list[str], objective: str, log_x: bool,
                       xlabel: str, title: str) -> bytes:
    """Every scored trial as a point per series, and the series' mean per x value as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name in series:
        pts = [(_param_number(r["record"], key), r["scores"].get(name, math.nan)) for r in rows
               if r["record"].status != "error"]
        pts = sorted((x, y) for x, y in pts if _finite(x) and _finite(y) and (not log_x or x > 0))
        if not pts:
            continue
        bold = name == objective
        dots = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=40 if bold else 18, alpha=0.5,
                          color="black" if bold else None, zorder=3 if bold else 2)
        means = {x: statistics.fmean(y for xx, y in pts if xx == x) for x in dict.fromkeys(p[0] for p in pts)}
        ax.plot(list(means), list(means.values()), marker="o", lw=2.5 if bold else 1.2,
                color=tuple(dots.get_facecolor()[0][:3]), label=f"{name} (objective)" if bold else name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation score")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def curves_png(rows: list[dict], objective: str, best_id: str | None) -> bytes:
    """Each trial's objective over optimizer steps; an X where the scheduler stopped it early."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    label_each = len(rows) <= 12
    stopped_label = "stopped early (ASHA)"
    for row in rows:
        r: TrialRecord = row["record"]
        pts = [(_as_float(h.get("step")), _as_float(h.get(objective))) for h in r.history if objective in h]
        pts = [(x, y) for x, y in pts if _finite(x)]
        if not pts:
            continue
        is_best = r.trial_id == best_id
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=2.5 if is_best else 1.0,
                        label=(f"{r.trial_id}{' (best)' if is_best else ''}" if label_each else None))
        last = next(((x, y) for x, y in reversed(pts) if _finite(y)), None)
        if r.status == "stopped_early" and last is not None:
            ax.scatter([last[0]], [last[1]], marker="X", s=90, color="red", zorder=4, label=stopped_label)
            stopped_label = None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} over training, every trial")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------- entry point

def write_sweep_report(records: list[TrialRecord], out_dir: str, objective: str = "val_score",
                       tasks: list[str] | None = None, best_trial_id: str | None = None,
                       test_results: dict | None = None, title: str = "",
                       sweep_info: dict | None = None, mode: str = "max") -> dict:
    """Render trials.csv, trials.md, summary.md, the plots and sweep.json, then write them to
    `out_dir` (local or s3://; on a failed write all files are kept locally, see
    storage.write_with_fallback). Returns the sweep.json content."""
    if mode not in ("max", "min"):
        raise InputError(f"sweep report: mode must be 'max' or 'min', got {mode!r}")
    ids = [r.trial_id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError(f"sweep report: duplicate trial ids {sorted({i for i in ids if ids.count(i) > 1})}")
    if best_trial_id is not None and best_trial_id not in ids:
        raise InputError(f"sweep report: best_trial_id {best_trial_id!r} is not among the {len(ids)} trials")
    tasks = list(tasks) if tasks is not None else infer_tasks(records, objective)
    rows = rank_trials(records, objective, mode)
    best_id = best_trial_id or (rows[0]["record"].trial_id if rows and rows[0]["rankable"] else None)
    best_row = next((r for r in rows if r["record"].trial_id == best_id), None)
    params = list(dict.fromkeys(k for r in records for k in r.params))
    summary = compute_summary(rows, records, objective, tasks)
    test_rows = flare_test_rows(test_results) if test_results else []
    ctx = {"title": title, "objective": objective, "mode": mode, "tasks": tasks, "sweep_info": sweep_info or {},
           "best_row": best_row, "summary": summary, "test_rows": test_rows}
    series = [objective, *(f"val_{t}" for t in tasks)]
    files: dict[str, bytes] = {
        "trials.csv": trials_csv(rows, params, tasks, objective, best_id).encode(),
        "trials.md": trials_markdown(rows, params, tasks, objective, best_id, title).encode(),
    }
    if summary["ratio_effect"]:
        files["score_vs_ratio.png"] = score_vs_param_png(
            rows, summary["ratio_effect"]["param"], series, objective, False,
            f"synthetic ratio ({summary['ratio_effect']['param']})", "validation score vs synthetic:real ratio")
    if summary["lr_effect"]:
        files["score_vs_lr.png"] = score_vs_param_png(
            rows, summary["lr_effect"]["param"], series, objective, True,
            f"learning rate ({summary['lr_effect']['param']}, log scale)", "validation score vs learning rate")
    files["curves.png"] = curves_png(rows, objective, best_id)
    files["summary.md"] = summary_markdown(ctx).encode()
    result = {
        "title": title, "objective": objective, "mode": mode, "tasks": tasks, "best_trial_id": best_id,
        "sweep_info": sweep_info or {}, "summary": summary,
        "test_results": [{"label": label, "scores": vals} for label, vals in test_rows],
        "trials": [{**asdict(r["record"]), "rank": r["rank"], "objective": r["objective"], "scores": r["scores"]}
                   for r in rows],
        "files": sorted([*files, "sweep.json"]),
    }
    result = _strict_json(result)
    files["sweep.json"] = json.dumps(result, indent=2).encode()
    storage.write_with_fallback(out_dir, files, "sweep-report")
    return result
