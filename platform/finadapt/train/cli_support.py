"""What `finadapt pretrain|sft` and `pipelines/{pretrain,sft}.py` share: run a stage, print its summary."""
from __future__ import annotations

import json

from finadapt.train.config import TrainConfig
from finadapt.train.run import run_training


def run_stage(cfg: TrainConfig) -> int:
    summary = run_training(cfg)
    best = {k: v for k, v in summary["best_metrics"].items() if k.startswith("val_") or k in ("step", "loss")}
    print(json.dumps({"stage": summary["stage"], "plan": summary["plan"], "best": best,
                      "best_model_dir": summary["best_model_dir"],
                      "wall_seconds": round(summary["wall_seconds"], 1)}, indent=2))
    print(f"report, curves and the best model (Hugging Face dir) written to {cfg.output_dir}")
    return 0
