from __future__ import annotations

import torch
from torch import Tensor

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from ...core.pooling import masked_mean
from .config import TemAdapterConfig, TemSemanticAlignerConfig, TemTemporalAlignerConfig
from .modules import GuidanceText, SemanticAligner, TemporalAligner
from .templates import format_candidates


class _Templated:
    def format_candidates(self, question: str, answers: list[str]) -> list[str]:
        return format_candidates(self.config.template, question, answers)


@register_adapter("tem_temporal_aligner")
class TemTemporalAligner(_Templated, Adapter):
    """Tem-Adapter's Temporal Aligner: encoder pooling of the frames, trained with language-guided next-frame prediction."""

    config_class = TemTemporalAlignerConfig
    stage = "video"
    sets_video_emb = True  # its pooled vector is the video embedding; wrap refuses a second pooler

    def __init__(self, config: TemTemporalAlignerConfig, dims) -> None:
        super().__init__(config, dims)
        config = self.config
        width = dims.embed_dim
        if width % config.heads:
            raise FeatureShapeError(f"tem_temporal_aligner: embed_dim {width} is not divisible by heads {config.heads}")
        self.aligner = TemporalAligner(width=width, heads=config.heads, ffn_dim=config.ffn_dim or 4 * width,
                                       dropout=config.dropout, official_compat=config.official_compat,
                                       text_width=dims.text_width)

    def forward(self, video, text, ctx) -> AdapterOutput:
        frames, mask = video.frame_emb, video.frame_mask
        if frames.shape[1] > self.config.max_frames:
            raise FeatureShapeError(
                f"tem_temporal_aligner: {frames.shape[1]} frames exceed max_frames={self.config.max_frames}"
            )
        video_emb = self.aligner.pool(frames, mask)
        losses: dict[str, Tensor] = {}
        if self.training and ctx.guidance is not None and self.config.prediction_weight > 0:
            guidance = _guidance_per_video(ctx.guidance, video.batch_size, ctx.text_to_video)
            predictions, valid = self.aligner.predict(frames, mask, guidance)
            if valid.any():
                error = (predictions - frames).pow(2).mean(-1)
                losses["prediction"] = self.config.prediction_weight * error[valid].mean()
        return AdapterOutput(video=video.replace(video_emb=video_emb), text=text, losses=losses)


def _guidance_per_video(guidance: TextFeatures, num_videos: int, text_to_video: Tensor | None) -> GuidanceText:
    """The event description(s) of each video: one guidance text per video (the model's contract), or
    several texts per video assigned by text_to_video, each video then reading all of its own."""
    count = guidance.batch_size
    device = guidance.text_emb.device
    if count == num_videos:
        slots = torch.arange(count, device=device)[:, None]
    else:
        if text_to_video is None or text_to_video.shape[0] != count:
            raise FeatureShapeError(
                f"tem_temporal_aligner: guidance has {count} texts for {num_videos} videos and no "
                "text_to_video of the same length to assign them"
            )
        # slots [B,K]: the texts of video v in slots[v], -1 where it has fewer than K
        order = text_to_video.argsort(stable=True)
        owner = text_to_video[order]
        per_video = torch.bincount(text_to_video, minlength=num_videos)
        first = per_video.cumsum(0) - per_video
        rank = torch.arange(count, device=device) - first[owner]
        slots = torch.full((num_videos, max(int(per_video.max()), 1)), -1, dtype=torch.long, device=device)
        slots[owner, rank] = order
    present = slots >= 0
    index = slots.clamp_min(0)
    tokens = token_mask = None
    if guidance.token_states is not None and guidance.token_mask is not None:
        # trailing columns that are padding in every text carry nothing: trimmed (77 -> the longest text)
        real = guidance.token_mask.any(0).nonzero()
        length = int(real.max()) + 1 if len(real) else 1
        tokens = guidance.token_states[index, :length].flatten(1, 2)
        token_mask = (guidance.token_mask[index, :length] & present[..., None]).flatten(1)
    return GuidanceText(sentences=guidance.text_emb[index], sentence_mask=present, tokens=tokens,
                        token_mask=token_mask)


@register_adapter("tem_semantic_aligner")
class TemSemanticAligner(_Templated, Adapter):
    """Tem-Adapter's Semantic Aligner: each candidate's tokens attend to its own video; gated residual on the text."""

    config_class = TemSemanticAlignerConfig
    stage = "cross"

    def __init__(self, config: TemSemanticAlignerConfig, dims) -> None:
        super().__init__(config, dims)
        config = self.config
        text_dim = dims.text_width if config.use_token_states else dims.embed_dim
        self.aligner = SemanticAligner(text_dim=text_dim, video_dim=dims.embed_dim, embed_dim=dims.embed_dim,
                                       width=config.width, heads=config.heads, layers=config.layers,
                                       dropout=config.dropout, gate_init=config.gate_init)

    def forward(self, video, text, ctx) -> AdapterOutput:
        if text is None or video is None:
            raise ValueError("tem_semantic_aligner is a cross adapter: it needs aligned (video, text) pairs")
        if video.batch_size != text.batch_size:
            raise FeatureShapeError(
                f"tem_semantic_aligner: expected aligned pairs, got {video.batch_size} videos and "
                f"{text.batch_size} texts"
            )
        tokens, token_mask = self._tokens(text)
        delta = self.aligner(tokens, token_mask, video.frame_emb, video.frame_mask)
        text = text.replace(text_emb=text.text_emb + delta)
        pair_logits = None
        if self.config.official_compat:
            # Official scoring: unnormalised dot product with the (temporal aligner's) video vector.
            video_emb = video.video_emb if video.video_emb is not None else masked_mean(
                video.frame_emb, video.frame_mask, dim=1)
            pair_logits = (text.text_emb * video_emb).sum(-1)
        return AdapterOutput(video=video, text=text, pair_logits=pair_logits)

    def refine_guidance(self, video: VideoFeatures, guidance: TextFeatures, ctx) -> TextFeatures:
        """The right text of each video, refined from that video as the candidates are: the temporal
        aligner then reads the semantic aligner's text as its guidance, as in the paper."""
        return self(video, guidance, ctx).text

    def _tokens(self, text: TextFeatures) -> tuple[Tensor, Tensor]:
        if not self.config.use_token_states:
            emb = text.text_emb[:, None]
            return emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device)
        if text.token_states is None or text.token_mask is None:
            raise FeatureShapeError(
                "tem_semantic_aligner: TextFeatures.token_states/token_mask are None; use a backbone or cache "
                "that keeps token states, or set use_token_states=False"
            )
        return text.token_states, text.token_mask


@register_adapter("tem_adapter")
class TemAdapter(_Templated, Adapter):
    """Tem-Adapter (both aligners); vla.wrap splits it into tem_temporal_aligner + tem_semantic_aligner."""

    config_class = TemAdapterConfig
    stage = "cross"

    def __init__(self, config: TemAdapterConfig, dims) -> None:
        super().__init__(config, dims)
        self.temporal = TemTemporalAligner(config.temporal_config(), dims)
        self.semantic = TemSemanticAligner(config.semantic_config(), dims)

    def parts(self) -> list[Adapter]:
        """The model runs the parts at their own stages: the temporal aligner in the dual encoder (with
        guidance and its prediction loss in training), the semantic aligner on aligned pairs."""
        return [self.temporal, self.semantic]

    def forward(self, video: VideoFeatures, text, ctx) -> AdapterOutput:
        """Used only when run outside vla.wrap: both parts on aligned pairs (no guidance, no loss)."""
        video = self.temporal(video, None, ctx).video
        return self.semantic(video, text, ctx)
