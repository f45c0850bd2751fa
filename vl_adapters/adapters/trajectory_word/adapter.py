from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from ...core.pooling import pair_cosine, video_embedding
from .config import TrajectoryWordConfig
from .modules import MatchingHead, TrajectoryWordEncoder


@register_adapter("trajectory_word")
class TrajectoryWord(Adapter):
    """TW-BERT's trajectory-word cross encoder as a "cross" adapter: scores aligned (text, video) pairs.

    pair_logits = exp(log_scale) * dual + bias + matching_head(encoder(pair)), where dual is the model's dual
    score of the pair (the cosine plus the dual adapters' extra terms). The head's last layer starts at
    zero and the bias at zero, so at init the pair logit is residual_scale * dual and re-ranking keeps the
    dual encoder's order; training moves it from there.

    It offers the projected words and patches its encoder fuses (`fusion_words`, `fusion_patches`; see
    core.adapter.FusionInputs): fine_grained_alignment, wrapped beside it, contrasts exactly those.
    """

    config_class = TrajectoryWordConfig
    stage = "cross"

    def __init__(self, config: TrajectoryWordConfig, dims) -> None:
        super().__init__(config, dims)
        config = self.config
        width = config.width
        self.width = self.fusion_width = width
        self.encoder = TrajectoryWordEncoder(
            text_width=dims.text_width, vision_width=dims.vision_width, embed_dim=dims.embed_dim, width=width,
            heads=config.heads, depth=config.depth, mlp_ratio=config.mlp_ratio, dropout=config.dropout,
            tie_weights=config.tie_weights, max_frames=config.max_frames, frame_selector=config.frame_selector,
            select_before=tuple(config.select_before), select_ratio=config.select_ratio,
            selector_samples=config.selector_samples, selector_sigma=config.selector_sigma,
        )
        self.head = MatchingHead(width=width)
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.residual_scale)))
        self.bias = nn.Parameter(torch.zeros(()))

    def _check(self, video: VideoFeatures, text: TextFeatures | None) -> TextFeatures:
        if text is None or text.token_states is None:
            raise FeatureShapeError("trajectory_word needs TextFeatures.token_states and token_mask (the text tower's states)")
        if video.patch_tokens is None:
            raise FeatureShapeError("trajectory_word needs VideoFeatures.patch_tokens [B,T,N,C]; keep them in the feature cache")
        if video.batch_size != text.batch_size:
            raise FeatureShapeError(
                f"trajectory_word scores aligned pairs: got {video.batch_size} videos and {text.batch_size} texts"
            )
        if video.num_frames > self.config.max_frames:
            raise FeatureShapeError(
                f"trajectory_word: {video.num_frames} frames exceed max_frames={self.config.max_frames}; raise it in the config"
            )
        return text

    def pooled_patches(self, video: VideoFeatures) -> Tensor:
        """[B,T,N',C]: patches average-pooled by patch_pool on the grid (N' = N / pool^2)."""
        pool = self.config.patch_pool
        if pool == 1:
            return video.patch_tokens
        b, t, n, c = video.patch_tokens.shape
        gh, gw = video.grid
        grid = video.patch_tokens.reshape(b * t, gh, gw, c).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(grid, pool, ceil_mode=True, count_include_pad=False)
        return pooled.flatten(2).transpose(1, 2).reshape(b, t, -1, c)

    def fusion_words(self, text: TextFeatures) -> Tensor:
        """[B,L,W] the word inputs the encoder fuses (padding where text.token_mask is False)."""
        if text.token_states is None:
            raise FeatureShapeError("trajectory_word needs TextFeatures.token_states and token_mask (the text tower's states)")
        return self.encoder.project_words(text.token_states)

    def fusion_patches(self, video: VideoFeatures) -> Tensor:
        """[B,T,N',W] the patch inputs the encoder fuses (pooled by patch_pool, before the frame positions)."""
        if video.patch_tokens is None:
            raise FeatureShapeError("trajectory_word needs VideoFeatures.patch_tokens [B,T,N,C]; keep them in the feature cache")
        return self.encoder.project_patches(self.pooled_patches(video))

    def encode_pairs(self, video: VideoFeatures, text: TextFeatures) -> Tensor:
        """Matching-head logits [P] of aligned pairs, before the cosine residual; chunks of pair_chunk pairs."""
        patches = self.pooled_patches(video)
        pooled_video = video_embedding(video)
        logits = []
        for start in range(0, video.batch_size, self.config.pair_chunk):
            part = slice(start, start + self.config.pair_chunk)
            mask = text.token_mask[part]
            # Trailing padding is trimmed: padded words change nothing, so this only saves work.
            real = mask.any(0).nonzero()
            length = int(real.max()) + 1 if len(real) else 1
            sentence, summary = self.encoder(
                token_states=text.token_states[part, :length], token_mask=mask[:, :length],
                sentence=text.text_emb[part], patch_tokens=patches[part], frame_mask=video.frame_mask[part],
                video=pooled_video[part],
            )
            logits.append(self.head(sentence, summary))
        return torch.cat(logits)

    def forward(self, video, text, ctx) -> AdapterOutput:
        text = self._check(video, text)
        dual = ctx.pair_similarity(text, video) if ctx.pair_similarity is not None else pair_cosine(text, video)
        residual = self.log_scale.exp() * dual + self.bias
        return AdapterOutput(video=video, text=text, pair_logits=residual + self.encode_pairs(video, text))
