"""Evaluation outputs: results.json (with provenance), results.md and results.png beside the
published FLARE numbers, and predictions.jsonl (every generation, for audit)."""
from __future__ import annotations

import io
import json
import platform as host_platform
import subprocess
from importlib import resources
from pathlib import Path

from finadapt import __version__, storage
from finadapt.config import dump_config
from finadapt.evaluate.runner import EvalRun
from finadapt.evaluate.wrappers import template_description
from finadapt.tasks import DataFormatError, get_task

PUBLISHED_KEYS = {"fpb": "fpb", "fiqasa": "fiqasa", "headlines": "headlines", "ner": "ner"}
TASK_LABELS = {"fpb": "FPB (wF1)", "fiqasa": "FiQA-SA (wF1)", "headlines": "Headlines (AvgF1)", "ner": "NER (entity F1)"}


def published_results() -> dict:
    return json.loads(resources.files("finadapt").joinpath("resources/published_results.json").read_text())


def code_revision() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{rev}{'-dirty' if dirty else ''}" if rev else f"finadapt-{__version__}"
    except (OSError, subprocess.SubprocessError):
        return f"finadapt-{__version__}"


def data_revision(tasks: list[str]) -> dict:
    from finadapt.tasks.materialize import load_manifest

    info: dict = {}
    if any(get_task(t).builtin for t in tasks):
        manifest = load_manifest()
        info["data_fingerprint"] = manifest.get("data_fingerprint")
        info["split_manifest_seed"] = manifest.get("seed")
    info["licenses"] = {t: get_task(t).license for t in tasks}
    return info


def build_results(run: EvalRun, model_path: str = "", model_revision: str = "", tokenizer=None,
                  output_dir: str = "") -> dict:
    cfg = run.config
    tasks = list(dict.fromkeys(r["task"] for r in run.rows))
    first_prompt = {}
    for task in tasks:
        row = next(r for r in run.rows if r["task"] == task)
        first_prompt[task] = {"id": row["id"], "query": row["query"]}
    return {
        "model": {"spec": cfg.model.spec, "path": model_path, "revision": model_revision,
                  "dtype": cfg.model.dtype, "trust_remote_code": cfg.model.trust_remote_code},
        "code_revision": code_revision(),
        "data": data_revision(tasks),
        "split": cfg.split,
        "limit": cfg.limit,
        "modes": list(cfg.modes),
        "wrapper": cfg.wrapper,
        "wrapper_template": template_description(cfg.wrapper, tokenizer) if tokenizer is not None else cfg.wrapper,
        "prompt_templates": {t: get_task(t).prompt_template for t in tasks},
        "example_queries": first_prompt,
        "generation": cfg.generation.model_dump(),
        "ner_last_token_quirk_reproduced": cfg.ner_last_token_quirk,
        "scores": run.scores,
        "failed_tasks": run.failed,
        "output_dir": output_dir or cfg.output_dir,
        "seconds": run.seconds,
        "rows": len(run.rows),
        "host": {"python": host_platform.python_version(), "machine": host_platform.machine()},
        "config_yaml": dump_config(cfg),
    }


def markdown_table(results: dict) -> str:
    scores = results["scores"]
    tasks = list(dict.fromkeys(s["task"] for s in scores))
    modes = list(dict.fromkeys(s["mode"] for s in scores))
    lines = [f"# FLARE zero-shot evaluation: `{results['model']['spec']}`", "",
             f"split `{results['split']}`, wrapper `{results['wrapper']}`, limit {results['limit']}, "
             f"code `{results['code_revision']}`, data `{results['data'].get('data_fingerprint')}`", "",
             "| task | mode | n | primary | score | 95% CI | majority floor | accuracy | missing rate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in scores:
        acc = s.get("accuracy")
        lines.append(
            f"| {s['task']} | {s['mode']} | {s['n']} | {s['primary']} | {s['score']:.3f} | "
            f"{s['ci95'][0]:.3f}–{s['ci95'][1]:.3f} | {s['majority_floor']:.3f} | "
            f"{'' if acc is None else f'{acc:.3f}'} | {s.get('missing_rate', 0.0):.3f} |")
    lines += ["", "## Beside published FLARE numbers (zero-shot; indicative, see caveat)", ""]
    pub = published_results()
    header = "| model | " + " | ".join(TASK_LABELS.get(t, t) for t in tasks) + " | source |"
    lines += [header, "|" + "---|" * (len(tasks) + 2)]
    for mode in modes:
        vals = {s["task"]: s["score"] for s in scores if s["mode"] == mode}
        cells = " | ".join(f"**{vals[t]:.3f}**" if t in vals else "" for t in tasks)
        lines.append(f"| {results['model']['spec']} ({mode}) | {cells} | this run |")
    for m in pub["models"]:
        cells = " | ".join("" if m.get(PUBLISHED_KEYS.get(t, "")) is None else f"{m[PUBLISHED_KEYS[t]]:.2f}"
                           for t in tasks)
        lines.append(f"| {m['model']} | {cells} | {m['source']} |")
    timing = {s["task"]: s.get("model_seconds") for s in scores if s.get("model_seconds") is not None}
    lines += ["", f"Caveat: {pub['caveat']}", "",
              "Model seconds per task (all modes): " + ", ".join(f"{t} {v:.0f}" for t, v in timing.items()), "",
              "Dataset licenses: " + "; ".join(f"{t}: {lic}" for t, lic in results["data"]["licenses"].items()),
              "", f"Wall time: {results['seconds']['total']:.0f} s "
              f"(model work {results['seconds']['predict']:.0f} s) for {results['rows']} rows."]
    failed = results.get("failed_tasks") or []
    if failed:
        lines += ["", "## Failed tasks (not evaluated)", ""]
        lines += [f"- `{f['task']}`: {' '.join(str(f['error']).split())}" for f in failed]
    return "\n".join(lines) + "\n"


def bar_chart_png(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = results["scores"]
    tasks = [t for t in dict.fromkeys(s["task"] for s in scores)]
    modes = list(dict.fromkeys(s["mode"] for s in scores))
    pub = [m for m in published_results()["models"] if m["model"] in
           ("GPT-4", "ChatGPT (gpt-3.5)", "FinMA-7B", "Fin-Pythia-1.4B", "LLaMA-7B (base)")]
    series = [(f"this model ({m})", {s["task"]: s["score"] for s in scores if s["mode"] == m}) for m in modes]
    series += [(m["model"], {t: m.get(PUBLISHED_KEYS.get(t, "")) for t in tasks}) for m in pub]
    floors = {s["task"]: s["majority_floor"] for s in scores if s["mode"] == modes[0]}
    fig, ax = plt.subplots(figsize=(max(9, 2.2 * len(tasks) + 3), 4.5))
    width = 0.8 / len(series)
    for k, (name, vals) in enumerate(series):
        xs = [i + k * width for i in range(len(tasks))]
        ys = [vals.get(t) or 0.0 for t in tasks]
        ax.bar(xs, ys, width, label=name, hatch=None if k < len(modes) else "//", alpha=1 if k < len(modes) else 0.6)
    for i, t in enumerate(tasks):
        ax.hlines(floors.get(t, 0), i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="dashed")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))])
    ax.set_xticklabels([TASK_LABELS.get(t, t) for t in tasks])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"FLARE zero-shot: {results['model']['spec']} vs published (dashed: majority floor)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_png(fig)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (laid out, closed): every report's charts are written this way."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def rerender(output_dir: str) -> None:
    """Re-write results.md and results.png from an existing results.json (e.g. after a report change)."""
    uri = storage.join(output_dir, "results.json")
    try:
        results = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{uri}: line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{uri}: not UTF-8 text ({err})") from err
    try:
        md, png = markdown_table(results), bar_chart_png(results)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else f"unexpected content ({err})"
        raise DataFormatError(f"{uri}: not a finadapt results file: {what} (e.g. 'scores', 'model')") from err
    storage.write_text(storage.join(output_dir, "results.md"), md)
    storage.write_bytes(storage.join(output_dir, "results.png"), png)


def write_report(run: EvalRun, output_dir: str, model_path: str = "", model_revision: str = "",
                 tokenizer=None) -> dict:
    """Write results.json / results.md / results.png / predictions.jsonl (local dir or s3://).

    Everything is rendered first; if a write then fails the files are kept in a local fallback
    directory and ResultsKeptLocallyError says where (see storage.write_with_fallback)."""
    results = build_results(run, model_path, model_revision, tokenizer, output_dir)
    lines = []
    for row in run.rows:
        out = run.outputs[row["id"]]
        lines.append(json.dumps({"id": row["id"], "task": row["task"], "gold": row["gold"], "answer": row["answer"],
                                 "choice_pred": out["choice_pred"], "choice_logprobs": list(out["choice_logprobs"]),
                                 "generation": out["generation"], "prompt_tokens": int(out["prompt_tokens"]),
                                 "generated_tokens": int(out["generated_tokens"]),
                                 "model_seconds": float(out["choice_seconds"] + out["generate_seconds"])}))
    files = {
        "results.json": json.dumps(results, indent=2).encode(),
        "results.md": markdown_table(results).encode(),
        "results.png": bar_chart_png(results),
        "predictions.jsonl": ("\n".join(lines) + "\n").encode(),
    }
    storage.write_with_fallback(output_dir, files, "eval")
    return results
