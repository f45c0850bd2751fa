from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.contrastive import bounded_scale, two_way_infonce
from ...core.features import TextFeatures, VideoFeatures
from ...core.pooling import masked_mean
from ..temporal_transformer import TemporalTransformer, TemporalTransformerConfig
from .config import MultiLevelAlignmentConfig
from .modules import (
    TokenRefiner,
    pool_segments,
    same_string,
    same_video,
    segment_weights,
    split_phrases,
)


@register_adapter("multi_level_alignment")
class MultiLevelAlignment(Adapter):
    """Multi-level alignment: video and text modules trained to match whole video with caption and segment i with phrase i.

    The temporal module (temporal_transformer's) refines the frame embeddings, whose mean is the video
    embedding; a text module over the token states refines the sentence embedding. Both enter through
    zero-initialised residuals, so the model starts as mean pooling of the backbone. In training, each
    caption (ctx.guidance: the caption in retrieval, the right answer in multiple choice) is split into
    ordered phrases ("first A, then B, then C"), its video's real frames into as many consecutive
    segments, and two InfoNCE losses are added: pooled video against caption (global level) and segment
    against phrase (segment level), with the same video's other segments, other videos' segments and
    every other phrase as negatives: the negatives inside one video are what teach order. Phrases are
    encoded by the frozen text tower (ctx.encode_text), then by the text module. A "dual" adapter: each
    side is refined from its own features, so videos are indexed once.
    """

    config_class = MultiLevelAlignmentConfig
    stage = "dual"

    def __init__(self, config: MultiLevelAlignmentConfig, dims) -> None:
        super().__init__(config, dims)
        config = self.config
        temporal = TemporalTransformerConfig(layers=config.layers, heads=config.heads, max_frames=config.max_frames,
                                             mlp_ratio=config.mlp_ratio, dropout=config.dropout)
        self.temporal = TemporalTransformer(temporal, dims)
        self.text_module = None
        if config.text_layers:
            self.text_module = TokenRefiner(text_width=dims.text_width, embed_dim=dims.embed_dim,
                                            context_length=dims.context_length, layers=config.text_layers,
                                            heads=config.heads, mlp_ratio=config.mlp_ratio, dropout=config.dropout)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))

    def refine_text(self, text: TextFeatures) -> TextFeatures:
        return text if self.text_module is None else self.text_module(text)

    def forward(self, video, text, ctx) -> AdapterOutput:
        refined_text = None if text is None else self.refine_text(text)
        if video is None:
            return AdapterOutput(video=video, text=refined_text)
        if ctx.guidance is None:  # inference, or no caption per video: nothing to align
            return AdapterOutput(video=self.temporal(video, None, ctx).video, text=refined_text)
        repeated = same_video(video)  # before the temporal module, whose dropout tells copies apart
        video = self.temporal(video, None, ctx).video
        captions = ctx.guidance
        if captions.texts is None:
            raise ValueError(
                "multi_level_alignment: the captions' strings are needed to split them into phrases, but "
                "TextFeatures.texts is None; encode the captions from strings (or keep `texts` in cached "
                "TextFeatures)"
            )
        if captions.batch_size != video.batch_size:
            raise ValueError(
                f"multi_level_alignment: ctx.guidance has {captions.batch_size} captions for {video.batch_size} "
                "videos; it must hold one caption per video"
            )
        # in retrieval the guidance is the batch's own text, already refined above
        captions = refined_text if captions is text else self.refine_text(captions)
        losses = {"global": self.config.weight_global * self.global_loss(video, captions, repeated)}
        segment = self.segment_loss(video, captions.texts, ctx.encode_text)
        if segment is not None:
            losses["segment"] = self.config.weight_segment * segment
        return AdapterOutput(video=video, text=refined_text, losses=losses)

    @property
    def scale(self) -> Tensor:
        return bounded_scale(self.log_inv_temperature)

    def global_loss(self, video: VideoFeatures, captions: TextFeatures, repeated: Tensor) -> Tensor:
        """Whole video against whole caption. Identical captions are positives of each other, and so are the
        copies of a video that comes twice (`repeated` [B, B]: a multiple-choice batch may hold two
        questions about one video)."""
        pooled = F.normalize(masked_mean(F.normalize(video.frame_emb, dim=-1), video.frame_mask, dim=1), dim=-1)
        logits = self.scale * F.normalize(captions.text_emb, dim=-1) @ pooled.T
        positive = same_string(captions.texts).to(logits.device) | repeated
        return two_way_infonce(logits, positive)

    def segment_loss(self, video: VideoFeatures, captions: list[str], encode_text) -> Tensor | None:
        """Segment i of each video against phrase i of its caption; None when no caption has two or more
        phrases (or has more phrases than its video has real frames, which leaves a segment empty)."""
        frames = video.frame_mask.sum(1).tolist()
        per_caption = [split_phrases(c) for c in captions]
        rows = [(v, i, len(p), phrase) for v, p in enumerate(per_caption) if 1 < len(p) <= frames[v]
                for i, phrase in enumerate(p)]
        if not rows:
            return None
        if encode_text is None:
            raise ValueError("multi_level_alignment: ctx.encode_text is None; phrases are encoded by the "
                             "wrapped model's frozen text tower, so run the adapter inside vla.wrap")
        device = video.frame_emb.device
        video_index, phrase_index, num_phrases = (torch.tensor(col, device=device) for col in list(zip(*rows, strict=True))[:3])
        phrases = [row[3] for row in rows]
        weights = segment_weights(video.frame_mask, video_index, phrase_index, num_phrases)
        segments = pool_segments(video.frame_emb, weights, video_index)
        phrase_emb = F.normalize(self.refine_text(encode_text(phrases).to(device)).text_emb, dim=-1)
        logits = self.scale * phrase_emb @ segments.T
        return two_way_infonce(logits, same_string(phrases).to(device))
