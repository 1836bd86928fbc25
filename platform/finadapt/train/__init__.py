"""Two training stages on Ray Train: further pre-training (stage 1) and instruction tuning (stage 2)."""
from finadapt.train.config import PretrainConfig, SftConfig, TrainConfig
from finadapt.train.run import run_training

__all__ = ["PretrainConfig", "SftConfig", "TrainConfig", "run_training"]
