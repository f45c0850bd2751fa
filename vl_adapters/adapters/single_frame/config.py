from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError

ENSEMBLES = ("mean", "max")


@dataclass
class SingleFrameConfig(AdapterConfig):
    """Singularity's single-frame training with frame ensembling at inference (Lei et al., 2022).

    ensemble  how a video's frames are scored at inference: "mean" (the mean over frames of the
              frame-text cosine) or "max" (the best frame's cosine)
    """

    ensemble: str = "mean"

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ConfigError(f"SingleFrameConfig.ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
