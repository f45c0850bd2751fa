from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError

STRATEGIES = ("random", "motion")


@dataclass
class TokenMaskingConfig(AdapterConfig):
    """Patch-token masking before the ViT blocks, in training only (MAC, SMAUG).

    ratio     fraction of each frame's patch tokens dropped; the class token always stays
    strategy  "random": a fresh random subset per frame and step (MAC's sparse spatial sampling);
              "motion": keep the patches that differ most from their video's mean at the same place (a
              cheap, text-free saliency: static background goes first; SMAUG keeps "important" regions)
    """

    ratio: float = 0.5
    strategy: str = "random"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"TokenMaskingConfig.ratio must be in [0, 1) (a frame keeps at least one patch), "
                              f"got {self.ratio}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"TokenMaskingConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
