"""The reproduction report: what the study found so far, rebuilt from the small files the steps leave.

Reads plan.json, each step's step.json, eval-*/results.json and sft-*/summary.json under a results dir
(local or s3://) and writes report.json, report.md and ablation.png beside them. A study in progress
is normal: a step without step.json (or an eval without results.json) is shown as "pending", never an
error. Nothing is hard-coded: every number comes from those files or from published_results.json.

Noise rule for deltas and verdicts: a delta X - Y counts only when |delta| exceeds the largest of
(b)'s seed spread, the seed spreads of X and Y, and half the 95% CI width of X or Y where that row has
a single seed. Rows scored on different test sets (plan variant "test": subset vs full) are never
compared for a verdict; their deltas are shown flagged.
"""
from __future__ import annotations

import json
import math
import statistics
from importlib import resources
from typing import Any

from finadapt import storage
from finadapt.errors import InputError, InputNotFoundError

TASKS = ("fpb", "fiqasa", "headlines", "ner")
# (column key, task, results.json field, header); "score" is the task's primary metric.
COLUMNS = (("fpb_acc", "fpb", "accuracy", "FPB acc"), ("fpb", "fpb", "score", "FPB wF1"),
           ("fiqasa", "fiqasa", "score", "FiQA-SA wF1"), ("headlines", "headlines", "score", "Headlines AvgF1"),
           ("ner", "ner", "score", "NER entity F1"))
MODE_ORDER = ("compat", "choice")  # compat first: FLARE's generation metric, comparable with published numbers
DELTA_MODES = ("compat", "choice")
DELTAS = (("c", "b", "synthetic"), ("d", "b", "stage 1"), ("e", "b", "both"), ("f", "b", "final recipe"))
CLAIMS = (
    {"id": "stage1_helps", "claim": "stage 1 helps", "pairs": (("d", "b"), ("e", "c")), "tasks": TASKS,
     "null": False},
    {"id": "synthetic_helps_classification", "claim": "synthetic data helps classification",
     "pairs": (("c", "b"), ("e", "d")), "tasks": ("fpb", "fiqasa", "headlines"), "null": False},
    {"id": "synthetic_not_ner", "claim": "synthetic data does not help NER", "pairs": (("c", "b"), ("e", "d")),
     "tasks": ("ner",), "null": True},
)
# Row (f) must reach these on the primary metric (compat mode); goals are what we aim for.
QUALITY_BARS = {"fpb": (0.88, 0.90), "fiqasa": (0.87, 0.88), "headlines": (0.97, 0.98), "ner": (0.69, 0.75)}
PUBLISHED_KEYS = ("fpb_acc", "fpb", "fiqasa", "headlines", "ner")
STEP_KINDS = ("corpus", "synth", "pretrain", "sft", "eval")
STEP_PAGES = ("report.md", "results.md")


# ---------------------------------------------------------------- reading

def _read_json(uri: str, required: bool = False) -> Any:
    """A JSON file, or None when absent (unless required); bad JSON is an error naming the file."""
    if not storage.exists(uri):
        if required:
            raise InputNotFoundError(f"{uri}: no such file (run `finadapt reproduce` first: it writes plan.json)")
        return None
    try:
        return json.loads(storage.read_text(uri))
    except json.JSONDecodeError as err:
        raise InputError(f"{uri}: line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from err


def _need(obj: Any, key: str, kind: type, where: str) -> Any:
    """obj[key] checked for type, so a malformed file fails naming the file and key."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise InputError(f"{where}: '{key}' missing or not a {kind.__name__}")
    return value


def read_plan(results_dir: str) -> dict:
    """plan.json, checked for the keys the report relies on."""
    uri = storage.join(results_dir, "plan.json")
    plan = _read_json(uri, required=True)
    _need(plan, "steps", list, uri)
    for name, variant in _need(plan, "variants", dict, uri).items():
        for key in ("eval_steps", "seeds"):
            _need(variant, key, list, f"{uri}: variants.{name}")
    return plan


def _step_kind(step: str, record: dict | None) -> str:
    """The step.json kind, else the name's prefix (pending steps have no step.json yet)."""
    if record and record.get("kind"):
        return str(record["kind"])
    prefix = step.split("-", 1)[0]
    return prefix if prefix in STEP_KINDS else "?"


def read_step(results_dir: str, step: str) -> dict:
    """One step's state: its step.json (or pending), and its results.json / summary.json when present."""
    base = storage.join(results_dir, step)
    record = _read_json(storage.join(base, "step.json"))
    kind = _step_kind(step, record)
    info = {"step": step, "kind": kind, "status": str(record.get("status", "done")) if record else "pending",
            "record": record or {}, "results": None, "summary": None}
    if kind == "eval":
        info["results"] = _read_json(storage.join(base, "results.json"))
    if kind in ("sft", "pretrain"):
        info["summary"] = _read_json(storage.join(base, "summary.json"))
    return info


def _score_index(results: dict | None, where: str) -> dict[tuple[str, str], dict]:
    """(task, mode) -> score entry of one results.json."""
    if results is None:
        return {}
    index = {}
    for entry in _need(results, "scores", list, where):
        if not isinstance(entry, dict) or "task" not in entry or "mode" not in entry:
            raise InputError(f"{where}: score entry {entry!r} has no 'task' or 'mode'")
        index[(entry["task"], entry["mode"])] = entry
    return index


# ---------------------------------------------------------------- numbers

def _num(value: Any) -> float | None:
    """A finite float, or None (missing, null, NaN): never shown as 0."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def seed_cell(entries: list[dict | None], field: str) -> dict:
    """One table cell over a variant's seeds: per-seed values, mean, spread = (max-min)/2 (multi-seed),
    the 95% CI (single seed, primary metric), n. Missing seeds stay None in `values`."""
    values = [_num(e.get(field)) if e else None for e in entries]
    got = [v for v in values if v is not None]
    cell = {"values": values, "seeds_done": len(got), "seeds_total": len(entries),
            "mean": statistics.fmean(got) if got else None, "spread": None, "ci95": None,
            "n": max((int(e["n"]) for e in entries if e and _num(e.get("n")) is not None), default=None)}
    if len(entries) > 1 and len(got) > 1:
        cell["spread"] = (max(got) - min(got)) / 2
    if len(entries) == 1 and got and field == "score":
        ci = entries[0].get("ci95")
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(x) is not None for x in ci):
            cell["ci95"] = [float(ci[0]), float(ci[1])]
    return cell


def _variant_entries(variant: dict, indexes: dict[str, dict], task: str, mode: str) -> list[dict | None]:
    """Per seed, the score entry of that seed's eval step for (task, mode), or None while pending."""
    return [indexes.get(s, {}).get((task, mode)) for s in variant["eval_steps"]]


def _modes_present(indexes: dict[str, dict]) -> list[str]:
    """Every scored mode, compat first, then choice, then the rest in first-seen order."""
    seen = list(dict.fromkeys(mode for index in indexes.values() for (_task, mode) in index))
    return [m for m in MODE_ORDER if m in seen] + [m for m in seen if m not in MODE_ORDER]


def subset_label(plan: dict) -> str:
    """The ablation test subsets' size in words, from plan.test_subsets."""
    sub = plan.get("test_subsets") or {}
    parts = [f"≤{sub['limit']} rows per task"] if sub.get("limit") is not None else []
    parts += [f"{t} {n}" for t, n in (sub.get("task_limits") or {}).items()]
    return ", ".join(parts) if parts else "size not recorded"


def floor_row(plan: dict, table: dict, mode: str, only: str | None = None) -> dict:
    """Majority-class floor per task, from a full-test row where one is scored (a subset's floor differs);
    `only="subset"`: from a test-subset row only (the floor the ablation rows are scored against)."""
    out = {}
    order = sorted(table, key=lambda v: plan["variants"][v].get("test") != "full")
    if only is not None:
        order = [v for v in order if plan["variants"][v].get("test", "full") == only]
    for task in TASKS:
        for v in order:
            floor = table[v]["floors"].get(task)
            if floor is not None:
                test = plan["variants"][v].get("test", "full")
                where = "full test set" if test == "full" else "test subset"
                out[task] = {"value": floor, "source": f"{where} (variant {v}, {mode} mode)"}
                break
    return out


def mode_table(plan: dict, indexes: dict[str, dict], mode: str) -> dict:
    """variant -> {label, test, cells per column, majority floors per task} for one mode."""
    table = {}
    for name in sorted(plan["variants"]):
        variant = plan["variants"][name]
        cells, floors = {}, {}
        for key, task, field, _header in COLUMNS:
            entries = _variant_entries(variant, indexes, task, mode)
            cells[key] = seed_cell(entries, field)
            floor = next((_num(e.get("majority_floor")) for e in entries if e), None)
            if floor is not None:
                floors[task] = floor
        table[name] = {"label": variant.get("label", name), "test": variant.get("test", "full"),
                       "seeds": variant["seeds"], "cells": cells, "floors": floors}
    return {"rows": table, "majority_floor": floor_row(plan, table, mode),
            "majority_floor_subset": floor_row(plan, table, mode, only="subset")}


# ---------------------------------------------------------------- deltas and verdicts

def _half_ci(cell: dict) -> float:
    ci = cell.get("ci95")
    return (ci[1] - ci[0]) / 2 if ci and cell["seeds_total"] == 1 else 0.0


def compare(rows: dict, x: str, y: str, task: str) -> dict:
    """Delta x - y on the task's primary metric, the noise threshold it must beat, and whether it does."""
    out = {"x": x, "y": y, "task": task, "delta": None, "threshold": None, "b_spread": None,
           "same_test_set": None, "outcome": "pending"}
    if x not in rows or y not in rows:
        out["outcome"] = "not in plan"
        return out
    cx, cy = rows[x]["cells"][task], rows[y]["cells"][task]
    b_spread = rows["b"]["cells"][task]["spread"] if "b" in rows else None
    out["b_spread"] = b_spread
    out["same_test_set"] = rows[x]["test"] == rows[y]["test"]
    if cx["mean"] is None or cy["mean"] is None:
        return out
    out["delta"] = cx["mean"] - cy["mean"]
    out["values"] = [cx["mean"], cy["mean"]]
    out["threshold"] = max(b_spread or 0.0, cx["spread"] or 0.0, cy["spread"] or 0.0, _half_ci(cx), _half_ci(cy))
    if not out["same_test_set"]:
        out["outcome"] = "different test sets"
    elif abs(out["delta"]) > out["threshold"]:
        out["outcome"] = "higher" if out["delta"] > 0 else "lower"
    else:
        out["outcome"] = "within noise"
    return out


def mode_deltas(rows: dict) -> dict:
    """c-b, d-b, e-b, f-b per task (primary metric)."""
    return {f"{x}-{y}": {"what": what, "tasks": {t: compare(rows, x, y, t) for t in TASKS}} for x, y, what in DELTAS}


def _verdict_from_counts(higher: int, lower: int, noise: int, null: bool) -> str:
    """Most comparisons beyond noise in the claimed direction (none more against) -> reproduced;
    more against than for -> not reproduced; else within noise. A "does not help" claim is the
    negation of "helps": it is reproduced unless help beyond noise is the majority."""
    n = higher + lower + noise
    if n == 0:
        return "pending"
    if higher > n / 2 and higher > lower:
        helps = "reproduced"
    elif lower > 0 and lower >= higher:
        helps = "not reproduced"
    else:
        helps = "within noise"
    if not null:
        return helps
    return "not reproduced" if helps == "reproduced" else "reproduced"


def claim_verdict(rows: dict, claim: dict, mode: str) -> dict:
    """One paper claim in one mode: its comparisons, counts, verdict and a plain sentence."""
    comps = [compare(rows, x, y, t) for x, y in claim["pairs"] for t in claim["tasks"]]
    counts = {k: sum(c["outcome"] == k for c in comps) for k in ("higher", "lower", "within noise")}
    skipped = len(comps) - sum(counts.values())
    verdict = _verdict_from_counts(counts["higher"], counts["lower"], counts["within noise"], claim["null"])
    judged = [c for c in comps if c["outcome"] in counts]
    if judged and all(v == 0 for c in judged for v in c["values"]):
        verdict = "not measurable (every compared score is 0)"  # a null claim is not confirmed by zeros
    pairs = " and ".join(f"{x} vs {y}" for x, y in claim["pairs"])
    text = (f"{claim['claim']} ({mode} mode, {pairs} on {', '.join(claim['tasks'])}): {verdict} — "
            f"{counts['higher']} higher beyond noise, {counts['lower']} lower beyond noise, "
            f"{counts['within noise']} within noise")
    text += f", {skipped} not comparable yet (pending or different test sets)." if skipped else "."
    if verdict == "not reproduced":
        text += " This did not reproduce."
    return {"id": claim["id"], "claim": claim["claim"], "mode": mode, "verdict": verdict, "counts": counts,
            "not_comparable": skipped, "comparisons": comps, "text": text}


def quality_bar(rows: dict, mode: str) -> list[dict]:
    """Row (f) against the quality bar and goal per task: met / missed with the measured value."""
    out = []
    for task, (bar, goal) in QUALITY_BARS.items():
        value = rows["f"]["cells"][task]["mean"] if "f" in rows else None
        status = "pending" if value is None else ("met" if value >= bar else "missed")
        goal_status = "pending" if value is None else ("met" if value >= goal else "missed")
        out.append({"task": task, "mode": mode, "bar": bar, "goal": goal, "value": value, "bar_status": status,
                    "goal_status": goal_status})
    return out


# ---------------------------------------------------------------- steps and links

def step_row(info: dict) -> dict:
    """A per-step line: wall time and tokens from step.json, summary.json filling what it lacks."""
    record, summary = info["record"], info["summary"] or {}
    tokens = {k: int(v) for k, v in (record.get("tokens") or {}).items() if _num(v) is not None}
    if not tokens and _num((summary.get("data") or {}).get("tokens")) is not None:
        tokens = {"train_tokens": int(summary["data"]["tokens"])}
    wall = _num(record.get("wall_seconds"))
    if wall is None:
        wall = _num(summary.get("wall_seconds")) if info["status"] != "pending" else None
    notes = [str(n) for n in record.get("notes") or []]
    if info["kind"] == "eval" and info["status"] == "done" and info["results"] is None:
        notes.append("results.json missing: its scores show as pending")
    return {"step": info["step"], "kind": info["kind"], "status": info["status"], "wall_seconds": wall,
            "tokens": tokens, "val_score": _num((summary.get("best_metrics") or {}).get("val_score")),
            "notes": notes, "outputs": list(record.get("outputs") or [])}


def step_totals(rows: list[dict]) -> dict:
    """Done/pending counts, wall time and tokens summed over the steps that ran."""
    tokens: dict[str, int] = {}
    for row in rows:
        for name, value in row["tokens"].items():
            tokens[name] = tokens.get(name, 0) + value
    return {"steps": len(rows), "done": sum(r["status"] == "done" for r in rows),
            "pending": sum(r["status"] == "pending" for r in rows),
            "wall_seconds": sum(r["wall_seconds"] or 0.0 for r in rows), "tokens": tokens}


def find_links(results_dir: str, steps: list[str]) -> list[dict]:
    """Relative links to the pages the steps wrote (corpus/report.md, synth/report.md, results.md...)."""
    names = list(dict.fromkeys(["corpus", "synth", *steps]))
    return [{"step": s, "path": f"{s}/{page}"} for s in names for page in STEP_PAGES
            if storage.exists(storage.join(results_dir, s, page))]


def published_rows() -> dict:
    """The published FLARE-style numbers and their caveat (read directly: importing the evaluate
    report module would load torch for one JSON file)."""
    pub = json.loads(resources.files("finadapt").joinpath("resources/published_results.json").read_text())
    rows = [{"model": m["model"], "source": m.get("source", ""), **{k: _num(m.get(k)) for k in PUBLISHED_KEYS}}
            for m in pub["models"]]
    return {"caveat": pub.get("caveat", ""), "scale": pub.get("scale", ""), "rows": rows}


# ---------------------------------------------------------------- the report

def build_report(results_dir: str) -> dict:
    """Everything the report shows, as plain data (the JSON written to report.json)."""
    plan = read_plan(results_dir)
    steps = {s: read_step(results_dir, s) for s in plan["steps"]}
    for variant in plan["variants"].values():  # eval steps missing from the run order still count
        for s in variant["eval_steps"]:
            steps.setdefault(s, read_step(results_dir, s))
    indexes = {s: _score_index(i["results"], storage.join(results_dir, s, "results.json")) for s, i in steps.items()}
    modes = _modes_present(indexes)
    tables = {m: mode_table(plan, indexes, m) for m in modes}
    delta_modes = [m for m in DELTA_MODES if m in modes] or modes[:1]
    step_rows = [step_row(steps[s]) for s in plan["steps"]]
    return {
        "name": plan.get("name", ""), "config_file": plan.get("config_file") or "reproduce.yaml", "results_dir": str(results_dir),
        "modes": modes, "test_subsets": plan.get("test_subsets") or {}, "subset_label": subset_label(plan),
        "variants": {v: {k: plan["variants"][v].get(k) for k in ("label", "test", "seeds", "train_steps",
                                                                    "eval_steps", "recipe")}
                     for v in sorted(plan["variants"])},
        "tables": tables,
        "published": published_rows(),
        "deltas": {m: mode_deltas(tables[m]["rows"]) for m in delta_modes},
        "verdicts": {m: [claim_verdict(tables[m]["rows"], c, m) for c in CLAIMS] for m in delta_modes},
        "quality_bar": quality_bar(tables[modes[0]]["rows"], modes[0]) if modes else [],
        "steps": step_rows, "totals": step_totals(step_rows),
        "links": find_links(results_dir, plan["steps"]),
        "files": {"json": "report.json", "markdown": "report.md", "plot": "ablation.png"},
    }


def write_reproduce_report(results_dir: str) -> dict:
    """Write report.json, report.md and ablation.png under results_dir; return the report dict."""
    report = build_report(results_dir)
    storage.write_text(storage.join(results_dir, "report.json"), json.dumps(report, indent=1) + "\n")
    storage.write_text(storage.join(results_dir, "report.md"), report_markdown(report))
    storage.write_bytes(storage.join(results_dir, "ablation.png"), ablation_png(report))
    return report


# ---------------------------------------------------------------- markdown

def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def format_cell(cell: dict) -> str:
    """mean ± spread over seeds, or score [CI] for one seed; 'pending' until a seed is scored."""
    if cell["mean"] is None:
        return "pending"
    if cell["seeds_total"] > 1:
        text = f"{_f(cell['mean'])} ± {_f(cell['spread'])}" if cell["spread"] is not None else _f(cell["mean"])
        if cell["seeds_done"] < cell["seeds_total"]:
            text += f" ({cell['seeds_done']} of {cell['seeds_total']} seeds)"
        return text
    ci = cell["ci95"]
    return f"{_f(cell['mean'])} [{_f(ci[0])}, {_f(ci[1])}]" if ci else _f(cell["mean"])


def _row_label(name: str, row: dict, subset: str) -> str:
    seeds = f", {len(row['seeds'])} seeds" if len(row["seeds"]) > 1 else ""
    test = "test subset" if row["test"] == "subset" else "full test"  # its rows per task: the n column
    return f"({name}) {row['label']} — {test}{seeds}"


def _n_text(row: dict) -> str:
    ns = [row["cells"][t]["n"] for t in TASKS]
    return "/".join("–" if n is None else str(n) for n in ns)


def _table_lines(report: dict, mode: str, with_published: bool) -> list[str]:
    table = report["tables"][mode]
    head = ["variant", *(c[3] for c in COLUMNS), "n (FPB/FiQA/HL/NER)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table["rows"].items():
        cells = [format_cell(row["cells"][c[0]]) for c in COLUMNS]
        lines.append(f"| {_row_label(name, row, report['subset_label'])} | " + " | ".join(cells) + f" | {_n_text(row)} |")
    floor_rows = [("majority-class floor", table["majority_floor"])]
    subset = table.get("majority_floor_subset") or {}
    if subset and any(f["source"].startswith("full") for f in table["majority_floor"].values()):
        floor_rows = [("majority-class floor, full test sets", table["majority_floor"]),
                      ("majority-class floor, test subsets (rows b-e)", subset)]
    for label, floors in floor_rows:
        cells = ["–" if c[2] != "score" else _f((floors.get(c[1]) or {}).get("value")) for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " | |")
    if with_published:
        for pub in report["published"]["rows"]:
            cells = [_f(pub[c[0]], 2) for c in COLUMNS]
            lines.append(f"| *published:* {pub['model']} ({pub['source']}) | " + " | ".join(cells) + " | |")
    return lines


def markdown_table(report: dict) -> str:
    """The main results table, one per mode (compat first), published rows beside the compat one."""
    if not report["modes"]:
        return "No evaluation results yet: every eval step is pending.\n"
    lines = []
    for k, mode in enumerate(report["modes"]):
        lines += [f"**{mode} mode**", ""] + _table_lines(report, mode, with_published=k == 0) + [""]
        if k == 0:
            lines.append(f"Published rows: {report['published']['caveat']}")
        floors = report["tables"][mode]["majority_floor"]
        if floors:
            lines.append("Majority-class floor from: " + "; ".join(f"{t} {f['source']}" for t, f in floors.items()) + ".")
        lines.append("")
    lines.append("Multi-seed rows: mean ± spread, spread = (max − min)/2 over seeds (per-seed values in report.json); "
                 "single-seed rows: score [95% CI].")
    return "\n".join(lines) + "\n"


def _delta_lines(report: dict, mode: str) -> list[str]:
    head = ["delta", *(t for t in TASKS)]
    lines = [f"**{mode} mode** (primary metric; noise = threshold the delta must beat)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged = False
    for key, delta in report["deltas"][mode].items():
        cells = []
        for t in TASKS:
            c = delta["tasks"][t]
            if c["delta"] is None:
                cells.append(c["outcome"])
                continue
            mark = "†" if c["same_test_set"] is False else ""
            flagged |= bool(mark)
            cells.append(f"{_signed(c['delta'])}{mark} (noise {_f(c['threshold'])}, {c['outcome']})")
        lines.append(f"| {key} ({delta['what']}) | " + " | ".join(cells) + " |")
    b_spread = [_f(report["deltas"][mode]["c-b"]["tasks"][t]["b_spread"]) for t in TASKS]
    lines.append("| (b) seed spread | " + " | ".join(b_spread) + " |")
    if flagged:
        lines += ["", "† compares different test sets (one row on the full test set, the other on a test subset): "
                  "shown for scale, not used in any verdict."]
    return lines + [""]


def _step_lines(report: dict) -> list[str]:
    lines = ["| step | kind | status | wall (min) | tokens | val score | notes |", "|---|---|---|---|---|---|---|"]
    for r in report["steps"]:
        wall = "–" if r["wall_seconds"] is None else f"{r['wall_seconds'] / 60:.1f}"
        tokens = ", ".join(f"{k} {v:,}" for k, v in r["tokens"].items()) or "–"
        notes = "; ".join(" ".join(n.split()).replace("|", "/") for n in r["notes"]) or ""
        lines.append(f"| {r['step']} | {r['kind']} | {r['status']} | {wall} | {tokens} | {_f(r['val_score'])} | {notes} |")
    t = report["totals"]
    tokens = ", ".join(f"{k} {v:,}" for k, v in t["tokens"].items()) or "–"
    lines.append(f"| **total** ({t['done']} done, {t['pending']} pending of {t['steps']}) | | | "
                 f"{t['wall_seconds'] / 60:.1f} | {tokens} | | |")
    return lines + [""]


def _quality_lines(report: dict) -> list[str]:
    lines = []
    for q in report["quality_bar"]:
        if q["bar_status"] == "pending":
            lines.append(f"- {q['task']} ({q['mode']}): pending (bar ≥ {q['bar']:.2f}, goal ≥ {q['goal']:.2f})")
            continue
        lines.append(f"- {q['task']} ({q['mode']}): {_f(q['value'])} — bar ≥ {q['bar']:.2f} {q['bar_status']}; "
                     f"goal ≥ {q['goal']:.2f} {q['goal_status']}")
    return lines or ["- no scores yet"]


def _not_reproduced_line(report: dict) -> str:
    """One plain line naming every claim that did not reproduce (or saying none could be judged yet)."""
    verdicts = [v for vs in report["verdicts"].values() for v in vs]
    failed = [f"{v['claim']} ({v['mode']} mode)" for v in verdicts if v["verdict"] == "not reproduced"]
    if failed:
        return "Did not reproduce: " + "; ".join(failed) + "."
    if all(v["verdict"] == "pending" for v in verdicts):
        return "No claim can be judged yet: the rows they compare are pending."
    return "Did not reproduce: none of the claims judged so far."


def report_markdown(report: dict) -> str:
    """The whole report.md: main table, deltas, verdicts, quality bar, steps, links."""
    lines = [f"# Reproduction report: {report['name']}", "",
             f"Config `{report['config_file']}`. Ablation rows scored on test subsets ({report['subset_label']}); "
             "rows marked full test on the full test sets.", "", "## Results", "", markdown_table(report),
             "![ablation](ablation.png)", "", "## What each stage adds over (b)", ""]
    for mode in report["deltas"]:
        lines += _delta_lines(report, mode)
    lines += ["## Paper claims", ""]
    for mode, verdicts in report["verdicts"].items():
        lines += [f"- {v['text']}" for v in verdicts]
    lines += ["", _not_reproduced_line(report), ""]
    lines += ["## Quality bar, row (f)", ""] + _quality_lines(report) + ["", "## Steps", ""] + _step_lines(report)
    lines += ["## Step reports", ""] + ([f"- [{link['path']}]({link['path']})" for link in report["links"]]
                                        or ["- none yet"])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plot

def _error_bar(cell: dict) -> tuple[float, float]:
    """(below, above): the CI for one seed, the spread for several, nothing otherwise."""
    if cell["ci95"]:
        return max(0.0, cell["mean"] - cell["ci95"][0]), max(0.0, cell["ci95"][1] - cell["mean"])
    spread = cell["spread"] or 0.0
    return spread, spread


def ablation_png(report: dict) -> bytes:
    """Grouped bars (task on x, one bar per variant) of the first mode's primary metric; dashed floors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    mode = report["modes"][0] if report["modes"] else None
    rows = report["tables"][mode]["rows"] if mode else {}
    width = 0.8 / max(1, len(rows))
    for k, (name, row) in enumerate(rows.items()):
        cells = [row["cells"][t] for t in TASKS]
        xs = [i + k * width for i, c in enumerate(cells) if c["mean"] is not None]
        shown = [c for c in cells if c["mean"] is not None]
        if shown:
            errs = list(zip(*(_error_bar(c) for c in shown)))
            subset = " [test subset]" if row["test"] == "subset" else ""
            ax.bar(xs, [c["mean"] for c in shown], width, yerr=errs, capsize=3, color=f"C{k % 10}",
                   label=f"({name}) {row['label']}{subset}")
    floors = report["tables"][mode]["majority_floor"] if mode else {}
    for i, t in enumerate(TASKS):
        if t in floors:
            ax.hlines(floors[t]["value"], i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="dashed")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(TASKS))])
    ax.set_xticklabels(["FPB (wF1)", "FiQA-SA (wF1)", "Headlines (AvgF1)", "NER (entity F1)"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"Ablation, {mode} mode (error bars: 95% CI or seed spread; dashed: majority floor)" if mode
                 else "Ablation: no evaluation results yet")
    if rows:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    from finadapt.evaluate.report import figure_png

    return figure_png(fig)
