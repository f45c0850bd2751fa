from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...core.config import AdapterConfig, ConfigError, fit_heads


@dataclass
class TrajectoryWordConfig(AdapterConfig):
    """TW-BERT's asymmetric cross-modal encoder (trajectory-to-word + word-to-patch) and matching head.

    width          common width both sides are projected to; None = the text tower's width
    heads          attention heads (width must divide by it); None: heads of 64 channels as in the paper
                   (8 on ViT-B's 512, 1 on a 64-wide backbone), at most 12
    depth          number of cross-modal layers; None: half the text tower's depth (TW-BERT's cross-modal
                   encoder is the upper 6 of BERT's 12 layers), at most 2 (cost: every layer's video stream
                   runs once per caption-video pair): 2 on ViT-B, 1 on the 2-layer tiny backbone
    tie_weights    the original's sharing: trajectory step and W2P share Q/K/V, one output projection
                   and one feed-forward for both streams; False gives every part its own
    patch_pool     average-pool the patch grid by this factor first (TW-BERT pools 14x14 to 7x7)
    max_frames     size of the learned frame-position table (CLIP patch tokens carry no time)
    pair_chunk     pairs encoded at once inside the adapter: bounds its peak memory (see docs)
    residual_scale initial (learnable) scale of the dual cosine added to the matching logit; the
                   head's last layer starts at zero, so at init pair_logits = residual_scale * cosine
    frame_selector the ICCV version's hierarchical frame selector (off by default: it makes the video
                   side query-dependent); select_before lists the layers it runs before, each keeping
                   ceil(select_ratio * frames); perturbed top-k with selector_samples / selector_sigma
    """

    width: int | None = None
    heads: int | None = None
    depth: int | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    tie_weights: bool = True
    patch_pool: int = 1
    max_frames: int = 64
    pair_chunk: int = 256
    residual_scale: float = 10.0
    frame_selector: bool = False
    select_before: list[int] = field(default_factory=lambda: [1])
    select_ratio: float = 0.72
    selector_samples: int = 500
    selector_sigma: float = 0.05

    def __post_init__(self) -> None:
        name = "TrajectoryWordConfig"
        self.require_at_least(1, "heads")
        if self.depth is not None and self.depth < 1:
            raise ConfigError(f"{name}.depth must be >= 1, got {self.depth}")
        if self.width is not None and self.heads is not None and self.width % self.heads:
            raise ConfigError(f"{name}.width ({self.width}) must be divisible by heads ({self.heads})")
        if self.patch_pool < 1 or self.pair_chunk < 1 or self.max_frames < 1:
            raise ConfigError(f"{name}: patch_pool, pair_chunk and max_frames must be >= 1")
        if self.residual_scale <= 0:
            raise ConfigError(f"{name}.residual_scale must be > 0, got {self.residual_scale}")
        if not 0.0 < self.select_ratio <= 1.0:
            raise ConfigError(f"{name}.select_ratio must be in (0, 1], got {self.select_ratio}")
        # with depth None the layers are checked once resolve() has set it
        bad = [i for i in self.select_before if self.depth is not None and not 0 <= i < self.depth]
        if bad and self.frame_selector:
            raise ConfigError(f"{name}.select_before has layer indices {bad} outside [0, depth={self.depth})")
        if self.selector_samples < 1 or self.selector_sigma <= 0:
            raise ConfigError(f"{name}: selector_samples must be >= 1 and selector_sigma > 0")

    def resolve(self, dims) -> TrajectoryWordConfig:
        width = self.width or dims.text_width
        depth = self.depth or min(2, max(1, dims.text_layers // 2))
        return dataclasses.replace(self, width=width, depth=depth,
                                   heads=fit_heads(self.heads, width=width, paper=12, head_width=64))
