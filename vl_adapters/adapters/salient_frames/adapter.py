from __future__ import annotations

from torch import Tensor

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from .config import SalientFrameFilterConfig, SalientFramesConfig, SalientFrameScorerConfig
from .modules import (
    FrameScorer,
    SalientVideoFeatures,
    frame_relevance,
    keep_frames,
    masked_log_softmax,
    saliency_loss,
    top_frames,
)


@register_adapter("salient_frame_scorer")
class SalientFrameScorer(Adapter):
    """LGDN's salient frames, picked from the video alone for the cross adapters; learned from the captions."""

    config_class = SalientFrameScorerConfig
    stage = "video"

    def __init__(self, config: SalientFrameScorerConfig, dims) -> None:
        super().__init__(config, dims)
        self.scorer = FrameScorer(dim=dims.embed_dim, hidden=self.config.hidden)

    def target(self, video: VideoFeatures, guidance: TextFeatures) -> Tensor:
        """[B, T] the language-guided relevance of each frame to its video's caption (no gradient)."""
        if guidance.batch_size != video.batch_size:
            raise FeatureShapeError(f"salient_frame_scorer: {guidance.batch_size} guidance captions for "
                                    f"{video.batch_size} videos; it needs one caption per video")
        relevance = frame_relevance(video.frame_emb, guidance.text_emb).detach() / self.config.temperature
        return masked_log_softmax(relevance, video.frame_mask).exp()

    def forward(self, video, text, ctx) -> AdapterOutput:
        scores = self.scorer(video.frame_emb, video.frame_mask)
        losses: dict[str, Tensor] = {}
        if self.training and ctx.guidance is not None and self.config.loss_weight > 0:
            target = self.target(video, ctx.guidance)
            losses["saliency"] = self.config.loss_weight * saliency_loss(scores, video.frame_mask, target)
        index = top_frames(scores, video.frame_mask, self.config.keep)
        return AdapterOutput(video=SalientVideoFeatures.annotate(video, index), text=text, losses=losses)


@register_adapter("salient_frame_filter")
class SalientFrameFilter(Adapter):
    """Gives the cross adapters listed after it only the salient frames (no weights, no change to the scores)."""

    config_class = SalientFrameFilterConfig
    stage = "cross"
    feeds_later_cross = True

    def forward(self, video, text, ctx) -> AdapterOutput:
        if self.config.guide == "text":
            if text is None or text.batch_size != video.batch_size:
                raise FeatureShapeError("salient_frame_filter (guide 'text') needs aligned (video, text) pairs")
            index = top_frames(frame_relevance(video.frame_emb, text.text_emb), video.frame_mask, self.config.keep)
        else:
            index = getattr(video, "salient_index", None)
            if index is None:
                raise FeatureShapeError(
                    "salient_frame_filter (guide 'learned') found no salient_index on the video features: list "
                    "'salient_frames' (scorer and filter), not the filter alone, or use guide 'text'; an adapter "
                    "that rebuilds VideoFeatures after salient_frame_scorer drops the selection")
        return AdapterOutput(video=keep_frames(video, index), text=text)


@register_adapter("salient_frames")
class SalientFrames(Adapter):
    """LGDN's salient-frame filtering: the cross adapters after it see 2-4 salient frames per video."""

    config_class = SalientFramesConfig
    stage = "cross"

    def __init__(self, config: SalientFramesConfig, dims) -> None:
        super().__init__(config, dims)
        self.scorer = SalientFrameScorer(config.scorer_config(), dims) if config.guide == "learned" else None
        self.filter = SalientFrameFilter(config.filter_config(), dims)

    def parts(self) -> list[Adapter]:
        """The scorer runs in the dual encoder (once per video, with its loss in training); the filter
        runs first among the cross adapters listed after this one."""
        return [part for part in (self.scorer, self.filter) if part is not None]

    def forward(self, video, text, ctx) -> AdapterOutput:
        """Used only outside vla.wrap: both parts on aligned pairs (no loss)."""
        if self.scorer is not None:
            video = self.scorer(video, None, ctx).video
        return self.filter(video, text, ctx)
