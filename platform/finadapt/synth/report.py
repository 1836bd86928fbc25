"""Quality and diversity of a synthetic run: acceptance per task and reason, label distribution
against the real data, distinct-n, self-similarity, nearest-real similarity, verifier agreement.

Diversity numbers are also computed for an equally sized seeded sample of the real training texts,
so "distinct-2 0.61" can be read against what real data of that task gives.
"""
from __future__ import annotations

import io
import json
import random
from collections import Counter

import numpy as np
from rapidfuzz import fuzz, process

from finadapt import storage
from finadapt.synth.pipeline import SynthRun
from finadapt.synth.validate import norm
from finadapt.tasks import Sample


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (word level, lower-cased)."""
    grams = [tuple(w[i:i + n]) for w in (t.lower().split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_similarity(texts: list[str], cap: int = 2000) -> float | None:
    """Mean over texts of the rapidfuzz ratio (0-100) to the most similar other text (None below 2)."""
    texts = [norm(t) for t in texts[:cap]]
    if len(texts) < 2:
        return None
    scores = process.cdist(texts, texts, scorer=fuzz.ratio, dtype=np.uint8).astype(float)
    np.fill_diagonal(scores, -1)
    return float(scores.max(axis=1).mean())


def _label(row: dict) -> str:
    if row["task"] == "ner":
        return "entities" if any(t != "O" for t in row["tags"]) else "none"
    return row["answer"]


def _ner_types(rows) -> Counter:
    return Counter(t[2:] for r in rows for t in r["tags"] if t.startswith("B-"))


def _share(counter: Counter) -> dict[str, float]:
    total = sum(counter.values()) or 1
    return {k: round(v / total, 4) for k, v in sorted(counter.items())}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def summarize(run: SynthRun, seed: int = 0) -> dict:
    tasks = list(run.requests)
    out: dict = {"tasks": {}, "totals": {}}
    for task in tasks:
        acc = [r for r in run.accepted if r["task"] == task]
        rej = [r for r in run.quarantined if r["task"] == task]
        real = [s.to_row() for s in run.real.get(task, [])]
        texts = [r["text"] for r in acc]
        real_texts = list(dict.fromkeys(r["text"] for r in real))
        real_sample = random.Random(f"{seed}:{task}").sample(real_texts, min(len(real_texts), max(len(texts), 2)))
        label_of = _ner_types if task == "ner" else (lambda rows: Counter(_label(r) for r in rows))
        near = [r["provenance"]["nearest_real_similarity"] for r in acc]
        agree = [r["provenance"].get("verifier_agrees") for r in acc if r["provenance"].get("verifier_agrees") is not None]
        verified_rejects = sum(r["reason"] == "verifier_disagrees" for r in rej)
        out["tasks"][task] = dict(
            requests=run.requests[task], accepted=len(acc),
            acceptance_rate=round(len(acc) / run.requests[task], 4) if run.requests[task] else 0.0,
            reject_reasons=dict(Counter(r["reason"] for r in rej).most_common()),
            labels_synthetic=_share(label_of(acc)), labels_real=_share(label_of(real)),
            distinct_1=round(distinct_n(texts, 1), 4), distinct_2=round(distinct_n(texts, 2), 4),
            distinct_2_real_sample=round(distinct_n(real_sample, 2), 4),
            self_similarity=_round(self_similarity(texts)),
            self_similarity_real_sample=_round(self_similarity(real_sample)),
            nearest_real_similarity_mean=round(float(np.mean(near)), 2) if near else None,
            nearest_real_similarity_median=round(float(np.median(near)), 2) if near else None,
            nearest_real_similarity=near,
            mean_words=round(float(np.mean([len(t.split()) for t in texts])), 1) if texts else None,
            verifier_agreement=(round((sum(agree) + 0) / (len(agree) + verified_rejects), 4)
                                if run.verified and (agree or verified_rejects) else None),
        )
    requests = sum(run.requests.values())
    out["totals"] = dict(
        requests=requests, accepted=len(run.accepted), quarantined=len(run.quarantined),
        acceptance_rate=round(len(run.accepted) / requests, 4) if requests else 0.0,
        generation_seconds=round(run.generation_seconds, 1), total_seconds=round(run.total_seconds, 1),
        samples_per_s=round(requests / run.generation_seconds, 4) if run.generation_seconds else None,
        accepted_per_s=round(len(run.accepted) / run.generation_seconds, 4) if run.generation_seconds else None,
        generated_tokens=run.generated_tokens,
        generated_tokens_per_s=round(run.generated_tokens / run.generation_seconds, 1) if run.generation_seconds else None,
        reject_reasons=dict(Counter(r["reason"] for r in run.quarantined).most_common()),
    )
    return out


def markdown(summary: dict, header: dict) -> str:
    t = summary["totals"]
    lines = [f"# Synthetic instructions — {header.get('teacher')} ({header.get('engine')} engine)", "",
             f"{t['accepted']} of {t['requests']} generations accepted ({t['acceptance_rate']:.1%}); "
             f"generation {t['generation_seconds']} s ({t['samples_per_s']} samples/s, "
             f"{t['accepted_per_s']} accepted/s, {t['generated_tokens_per_s']} tokens/s).", "",
             "| task | requests | accepted | rate | distinct-2 (real) | self-sim (real) | nearest-real sim (median) "
             "| verifier agreement |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, s in summary["tasks"].items():
        agreement = "-" if s["verifier_agreement"] is None else f"{s['verifier_agreement']:.2f}"
        lines.append(f"| {task} | {s['requests']} | {s['accepted']} | {s['acceptance_rate']:.1%} | "
                     f"{s['distinct_2']:.2f} ({s['distinct_2_real_sample']:.2f}) | {_fmt(s['self_similarity'])} "
                     f"({_fmt(s['self_similarity_real_sample'])}) | {_fmt(s['nearest_real_similarity_median'])} "
                     f"| {agreement} |")
    lines += ["", "## Reject reasons", "", "| task | reason | count |", "|---|---|---:|"]
    for task, s in summary["tasks"].items():
        lines += [f"| {task} | {reason} | {n} |" for reason, n in s["reject_reasons"].items()]
    lines += ["", "## Labels: synthetic vs real (share)", ""]
    for task, s in summary["tasks"].items():
        lines.append(f"- **{task}**: synthetic {s['labels_synthetic']} — real {s['labels_real']}")
    lines += ["", "Similarities are rapidfuzz ratios (0-100) on lower-cased text; the real-data columns use a "
              "seeded sample of real training texts of the same size. NER labels are entity-type shares.", ""]
    return "\n".join(lines)


def plot(summary: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"wspace": 0.5})
    reasons = sorted({r for s in summary["tasks"].values() for r in s["reject_reasons"]})
    bottom = np.zeros(len(tasks))
    acc = np.array([summary["tasks"][t]["accepted"] for t in tasks], dtype=float)
    axes[0].bar(tasks, acc, label="accepted", color="tab:green")
    bottom += acc
    palette = [c for i, c in enumerate(plt.cm.tab20.colors) if i not in (4, 5)]  # greens mean accepted
    for reason, color in zip(reasons, palette * 2):
        vals = np.array([summary["tasks"][t]["reject_reasons"].get(reason, 0) for t in tasks], dtype=float)
        axes[0].bar(tasks, vals, bottom=bottom, label=reason, color=color)
        bottom += vals
    axes[0].set_title("generations by outcome")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    width = 0.4
    labels = [(t, k) for t in tasks for k in sorted(set(summary["tasks"][t]["labels_real"])
                                                     | set(summary["tasks"][t]["labels_synthetic"]))]
    x = np.arange(len(labels))
    axes[1].bar(x - width / 2, [summary["tasks"][t]["labels_real"].get(k, 0) for t, k in labels], width, label="real")
    axes[1].bar(x + width / 2, [summary["tasks"][t]["labels_synthetic"].get(k, 0) for t, k in labels], width,
                label="synthetic")
    axes[1].set_xticks(x, [f"{t}:{k}" for t, k in labels], rotation=70, fontsize=7)
    axes[1].set_title("label share")
    axes[1].legend()
    for t in tasks:
        sims = summary["tasks"][t]["nearest_real_similarity"]
        if sims:
            axes[2].hist(sims, bins=20, range=(0, 100), alpha=0.5, label=t)
    axes[2].set_title("similarity to the nearest real training text")
    axes[2].set_xlabel("rapidfuzz ratio")
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def rerender(output_dir: str) -> None:
    """Markdown and plot again from report.json (after a report-code change, or for a copied run)."""
    data = json.loads(storage.read_text(storage.join(output_dir, "report.json")))
    storage.write_text(storage.join(output_dir, "report.md"), markdown(data, data))
    storage.write_bytes(storage.join(output_dir, "report.png"), plot(data))


def write_report(output_dir: str, summary: dict, header: dict) -> None:
    storage.write_text(storage.join(output_dir, "report.json"),
                       json.dumps({**header, **summary}, indent=2, ensure_ascii=False))
    storage.write_text(storage.join(output_dir, "report.md"), markdown(summary, header))
    storage.write_bytes(storage.join(output_dir, "report.png"), plot(summary))
