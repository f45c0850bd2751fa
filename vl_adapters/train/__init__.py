"""Training and evaluation: TrainConfig, the Trainer, checkpoints and evaluation over a split."""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]
