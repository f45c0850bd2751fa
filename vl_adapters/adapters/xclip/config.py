from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError


@dataclass
class XClipConfig(AdapterConfig):
    """X-CLIP's multi-grained contrast (Ma et al., ACM MM 2022), kept a dual encoder.

    aosm_temperature  softmax temperature of attention over similarity matrices (0.01 in the paper)
    reweight          the paper's learnable identity-initialised re-weighting: a D x D matrix in the
                      sentence-video and word-frame dot products and position-mixing matrices applied to
                      the attention weights over words (L x L) and frames (T x T)
    max_frames        frames the frame re-weighting matrices cover
    gate_init         initial weight of (X-CLIP score - dual cosine) added to the dual cosine: 0 starts
                      as the backbone (identity at initialisation), 1 is the paper's score from the start
    chunk_elements    bound on the [texts, words, videos, frames] block scored at once
    """

    aosm_temperature: float = 0.01
    reweight: bool = True
    max_frames: int = 64
    gate_init: float = 0.0
    chunk_elements: int = 1 << 24

    def __post_init__(self) -> None:
        if self.aosm_temperature <= 0:
            raise ConfigError(f"XClipConfig.aosm_temperature must be > 0, got {self.aosm_temperature}")
        if self.max_frames < 1 or self.chunk_elements < 1:
            raise ConfigError("XClipConfig: max_frames and chunk_elements must be >= 1")
