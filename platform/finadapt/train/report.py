"""summary.json + report.md + curves.png for a training stage (from rank 0's metrics.jsonl)."""
from __future__ import annotations

import io
import json

from finadapt import storage


def read_history(output_dir: str) -> list[dict]:
    uri = storage.join(output_dir, "metrics.jsonl")
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def plot_curves(history: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [h["step"] for h in history]
    axes[0].plot(steps, [h["loss"] for h in history], label="train loss")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        axes[0].plot(*zip(*val), "o-", label="val loss")
    axes[0].set_xlabel("optimizer step")
    axes[0].legend()
    scores = [(h["step"], h["val_score"]) for h in history if "val_score" in h]
    if scores:
        axes[1].plot(*zip(*scores), "o-", color="tab:green")
        axes[1].set_title("validation FLARE score (mean primary metric)")
    else:
        axes[1].plot(steps, [h["lr"] for h in history], color="tab:orange")
        axes[1].set_title("learning rate")
    axes[1].set_xlabel("optimizer step")
    axes[2].plot(steps, [h["tokens_per_s"] for h in history], color="tab:purple")
    axes[2].set_title("tokens/s (non-padding)")
    axes[2].set_xlabel("optimizer step")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _markdown(summary: dict, history: list[dict]) -> str:
    plan, best = summary["plan"], summary["best_metrics"]
    steady = history[1:] or history
    lines = [
        f"# Training report: {summary['stage']}",
        "",
        f"- base model: `{summary['model']}`",
        f"- optimizer steps: {plan['total_steps']} ({plan['steps_per_epoch']} per epoch, "
        f"{plan['train_rows']} training rows, {plan['rows_per_worker_step']} per worker per step)",
        f"- best checkpoint: `{summary['best_checkpoint']}` exported to `{summary['best_model_dir']}`",
        f"- best metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in best.items()
                                        if k.startswith("val_") and isinstance(v, float)),
        f"- wall time: {summary['wall_seconds']:.0f} s",
    ]
    if steady:
        tps = sum(h["tokens_per_s"] for h in steady) / len(steady)
        mfu = sum(h["mfu"] for h in steady) / len(steady)
        lines.append(f"- mean tokens/s after the first step: {tps:.1f}, MFU {mfu:.3f} (useful FLOPs: model body on "
                     "real tokens + output head at labelled positions; never above 1, capped steps flagged)")
    lines += ["", "| step | epoch | loss | lr | tok/s | MFU | validation |", "|---|---|---|---|---|---|---|"]
    for h in history:
        val = ", ".join(f"{k[4:]}={v:.4f}" for k, v in h.items() if k.startswith("val_") and isinstance(v, float)
                        and k not in ("val_seconds", "val_tokens"))
        lines.append(f"| {h['step']} | {h['epoch']} | {h['loss']:.4f} | {h['lr']:.2e} | {h['tokens_per_s']:.1f} "
                     f"| {h['mfu']:.3f} | {val} |")
    return "\n".join(lines) + "\n\n![curves](curves.png)\n"


def write_training_report(cfg, summary: dict) -> None:
    history = read_history(cfg.output_dir)
    summary = {**summary, "steps_logged": len(history)}
    storage.write_text(storage.join(cfg.output_dir, "summary.json"), json.dumps(summary, indent=2, default=str))
    storage.write_text(storage.join(cfg.output_dir, "report.md"), _markdown(summary, history))
    if history:
        storage.write_bytes(storage.join(cfg.output_dir, "curves.png"),
                            plot_curves(history, f"{summary['stage']}: {summary['model']}"))
