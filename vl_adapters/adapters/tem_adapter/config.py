from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...core.config import AdapterConfig, ConfigError, fit_heads, fit_width
from .templates import DEFAULT_TEMPLATE, resolve_template

# The official configuration (XLiu443/Tem-adapter): forced when official_compat is set.
OFFICIAL_TEMPORAL = {"heads": 16, "ffn_dim": 2048, "dropout": 0.1}
OFFICIAL_SEMANTIC = {"width": 128, "heads": 16, "layers": 1, "dropout": 0.2, "gate_init": 1e-4}


@dataclass
class TemTemporalAlignerConfig(AdapterConfig):
    """Temporal Aligner: Transformer encoder pooling over frames + a language-guided causal decoder
    whose next-frame regression loss (weight `prediction_weight`) trains the encoder.

    official_compat: the official widths (16 heads, FFN 2048, post-norm ReLU, Xavier init), the pooled
    vector = mean of the encoder output (no residual, so NOT identity at initialisation), the raw
    guidance embedding added to a bidirectional memory and the leaky reconstruction target.
    """

    official_compat: bool = False
    heads: int | None = None  # None: 8 on ViT-B's 512, fewer where heads would be under 32 channels
    ffn_dim: int = 0  # 0: 4 x the embedding width
    dropout: float = 0.1
    prediction_weight: float = 1.0
    max_frames: int = 1024
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        _check_common(self)
        if self.official_compat:
            for key, value in OFFICIAL_TEMPORAL.items():
                setattr(self, key, value)
        self.require_at_least(1, "heads", "max_frames")
        if self.prediction_weight < 0:
            raise ConfigError(f"TemTemporalAlignerConfig.prediction_weight must be >= 0, got {self.prediction_weight}")

    def resolve(self, dims) -> TemTemporalAlignerConfig:
        return dataclasses.replace(self, heads=fit_heads(self.heads, width=dims.embed_dim, paper=8))


@dataclass
class TemSemanticAlignerConfig(AdapterConfig):
    """Semantic Aligner: the candidate's token states cross-attend to its own video's frames; the result
    enters the text embedding through a per-channel gate (zero at init).

    width  None: the official 128, at most the backbone's width; heads  None: heads of at least 32
    channels (4 at width 128; the official 16 heads are 8 channels wide)

    official_compat: width 128, 16 heads, dropout 0.2, gate 1e-4, ONE token per candidate (the pooled
    text embedding) and pair scores = unnormalised dot product with the video vector.
    """

    official_compat: bool = False
    width: int | None = None
    heads: int | None = None
    layers: int = 1
    dropout: float = 0.1
    gate_init: float = 0.0
    use_token_states: bool = True  # False: refine the single pooled text embedding, as the official code
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        _check_common(self)
        if self.official_compat:
            for key, value in OFFICIAL_SEMANTIC.items():
                setattr(self, key, value)
            self.use_token_states = False
        self.require_at_least(1, "width", "heads")
        if self.width is not None and self.heads is not None and self.width % self.heads:
            raise ConfigError(f"TemSemanticAlignerConfig: width {self.width} is not divisible by heads {self.heads}")
        if self.layers < 1:
            raise ConfigError(f"TemSemanticAlignerConfig.layers must be >= 1, got {self.layers}")

    def resolve(self, dims) -> TemSemanticAlignerConfig:
        width = fit_width(self.width, paper=OFFICIAL_SEMANTIC["width"], dims=dims)
        return dataclasses.replace(self, width=width,
                                   heads=fit_heads(self.heads, width=width, paper=OFFICIAL_SEMANTIC["heads"]))


@dataclass
class TemAdapterConfig(AdapterConfig):
    """Both aligners. `temporal` / `semantic`: overrides of the parts' configs (dicts of their keys);
    `official_compat` and `template` apply to both."""

    official_compat: bool = False
    template: str = DEFAULT_TEMPLATE
    temporal: dict = field(default_factory=dict)
    semantic: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common(self)
        self.temporal_config()
        self.semantic_config()

    def _part(self, cls, overrides: dict):
        for key in ("official_compat", "template", "type"):
            if key in overrides:
                raise ConfigError(f"TemAdapterConfig: set {key!r} on tem_adapter itself, not inside the part overrides")
        return cls.from_dict({**overrides, "official_compat": self.official_compat, "template": self.template})

    def temporal_config(self) -> TemTemporalAlignerConfig:
        return self._part(TemTemporalAlignerConfig, self.temporal)

    def semantic_config(self) -> TemSemanticAlignerConfig:
        return self._part(TemSemanticAlignerConfig, self.semantic)


def _check_common(config) -> None:
    try:
        resolve_template(config.template)
    except ValueError as error:
        raise ConfigError(str(error)) from None
