from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.config import AdapterConfig, ConfigError, fit_width

GUIDES = ("learned", "text")


def _check(name: str, *, keep: int, guide: str | None = None, hidden: int | None = 1, temperature: float = 1.0,
           loss_weight: float = 0.0) -> None:
    if keep < 1:
        raise ConfigError(f"{name}.keep must be >= 1 (LGDN keeps 2-4 frames), got {keep}")
    if guide is not None and guide not in GUIDES:
        raise ConfigError(f"{name}.guide must be one of {GUIDES}, got {guide!r}")
    if (hidden is not None and hidden < 1) or not temperature > 0 or loss_weight < 0:
        raise ConfigError(f"{name}: hidden must be >= 1, temperature > 0 and loss_weight >= 0, got hidden={hidden}, "
                          f"temperature={temperature}, loss_weight={loss_weight}")


@dataclass
class SalientFrameScorerConfig(AdapterConfig):
    """The video-only saliency scorer (stage "video"): it picks `keep` frames of each video once, when the
    video is encoded, for the cross adapters listed after salient_frames.

    keep         frames kept per video (LGDN keeps 2-4)
    hidden       width of the scorer's MLP over [frame ; frame - video mean]; None: 256, at most the
                 backbone's width
    temperature  of the language-guided target: softmax over a video's frames of cos(frame, caption) / temperature
    loss_weight  weight of KL(target || scorer), computed in training from the caption of each video
    """

    keep: int = 3
    hidden: int | None = None
    temperature: float = 0.05
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        _check("SalientFrameScorerConfig", keep=self.keep, hidden=self.hidden, temperature=self.temperature,
               loss_weight=self.loss_weight)

    def resolve(self, dims) -> SalientFrameScorerConfig:
        return dataclasses.replace(self, hidden=fit_width(self.hidden, paper=256, dims=dims))


@dataclass
class SalientFrameFilterConfig(AdapterConfig):
    """What the cross adapters after the filter see (stage "cross", no weights).

    guide  "text": each pair's `keep` frames most similar to the pair's text (LGDN's query-dependent pick);
           "learned": the frames salient_frame_scorer picked from the video alone (needs that scorer).
    keep   frames kept per pair with guide "text" (with "learned" the scorer's own count)
    """

    guide: str = "text"
    keep: int = 3

    def __post_init__(self) -> None:
        _check("SalientFrameFilterConfig", keep=self.keep, guide=self.guide)


@dataclass
class SalientFramesConfig(AdapterConfig):
    """LGDN's salient-frame filtering: the scorer (guide "learned" only) and the filter, with the keys of both."""

    guide: str = "learned"
    keep: int = 3
    hidden: int | None = None
    temperature: float = 0.05
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        _check("SalientFramesConfig", keep=self.keep, guide=self.guide, hidden=self.hidden,
               temperature=self.temperature, loss_weight=self.loss_weight)

    def scorer_config(self) -> SalientFrameScorerConfig:
        return SalientFrameScorerConfig(keep=self.keep, hidden=self.hidden, temperature=self.temperature,
                                        loss_weight=self.loss_weight)

    def filter_config(self) -> SalientFrameFilterConfig:
        return SalientFrameFilterConfig(guide=self.guide, keep=self.keep)
