"""Phrases of a caption, the matching segments of a video, and the two-way contrast between them."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from ...core.pooling import masked_mean

# Sentences end at . ! ? or ; ; a question ("What happens in the video?") describes no event.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
# Connectives that put the next clause after the previous one in time. "after"/"before" are left out:
# "B after A" narrates out of order, and reordering needs more than a split.
_THEN = re.compile(r",?\s*\b(?:and then|then|after that|afterwards|next|finally|later)\b,?\s*", re.IGNORECASE)
_LEADING = re.compile(r"^(?:first(?:ly)?|at first|and)\b,?\s*", re.IGNORECASE)


def split_phrases(caption: str) -> list[str]:
    """The ordered event phrases of a caption: "first A, then B, then C" -> [A, B, C]. Sentences that
    follow each other are successive events too; questions are dropped; a caption without temporal
    connectives is one phrase."""
    phrases = []
    for sentence in _SENTENCE_END.split(caption.strip()):
        if sentence.endswith("?"):
            continue
        for clause in _THEN.split(sentence):
            clause = _LEADING.sub("", clause.strip()).strip(" ,.;!")
            if clause:
                phrases.append(clause)
    return phrases


def segment_weights(frame_mask: Tensor, video_index: Tensor, phrase_index: Tensor, num_phrases: Tensor) -> Tensor:
    """[S, T] averaging weights of S segments: segment s is part phrase_index[s] of num_phrases[s] equal
    consecutive parts of the real frames of video video_index[s] (every part non-empty when
    num_phrases <= real frames). Rows sum to 1."""
    mask = frame_mask.index_select(0, video_index)  # [S, T]
    rank = mask.long().cumsum(1) - 1  # position of each real frame among the real ones
    count = mask.sum(1, keepdim=True)
    part = rank * num_phrases[:, None] // count.clamp_min(1)
    member = mask & (part == phrase_index[:, None])
    return member.float() / member.sum(1, keepdim=True).clamp_min(1)


def pool_segments(frames: Tensor, weights: Tensor, video_index: Tensor) -> Tensor:
    """[S, D] unit-norm segment embeddings: the weighted mean of a video's unit-norm frames (meanP per segment)."""
    frames = F.normalize(frames, dim=-1).index_select(0, video_index)
    return F.normalize(einsum(weights, frames, "s t, s t d -> s d"), dim=-1)


def same_video(video: VideoFeatures) -> Tensor:
    """[B, B] bool: rows i and j of the batch are the same video (identical frames and mask)."""
    frames = video.frame_emb.flatten(1)
    same = (frames[:, None] == frames[None]).all(-1)
    return same & (video.frame_mask[:, None] == video.frame_mask[None]).all(-1)


def same_string(strings: list[str]) -> Tensor:
    """[N, N] bool: strings i and j are equal (the positives among captions or phrases)."""
    ids = {s: i for i, s in enumerate(dict.fromkeys(strings))}
    index = torch.tensor([ids[s] for s in strings])
    return index[:, None] == index[None, :]


class TokenRefiner(nn.Module):
    """text_emb + out_proj(mean of Transformer(token_states + position)): the text side's trainable part.
    The frozen sentence embedding of "first A, then B" and of its reversal are nearly the same vector; a
    layer over the words and their positions can tell them apart. out_proj starts at zero (identity)."""

    def __init__(self, *, text_width: int, embed_dim: int, context_length: int, layers: int, heads: int,
                 mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        heads = heads if text_width % heads == 0 else 1
        self.position = nn.Embedding(context_length, text_width)
        nn.init.normal_(self.position.weight, std=0.01)
        layer = nn.TransformerEncoderLayer(
            d_model=text_width, nhead=heads, dim_feedforward=int(text_width * mlp_ratio),
            dropout=dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.out_proj = nn.Linear(text_width, embed_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, text: TextFeatures) -> TextFeatures:
        if text.token_states is None:
            raise FeatureShapeError("multi_level_alignment needs TextFeatures.token_states and token_mask "
                                    "(set text_layers: 0 to leave the text side frozen)")
        length = text.token_states.shape[1]
        if length > self.position.num_embeddings:
            raise FeatureShapeError(f"multi_level_alignment: {length} tokens exceed the backbone's context_length "
                                    f"{self.position.num_embeddings}")
        positions = self.position(torch.arange(length, device=text.token_states.device))
        hidden = self.encoder(text.token_states + positions, src_key_padding_mask=~text.token_mask)
        pooled = masked_mean(hidden, text.token_mask, dim=1)
        return text.replace(text_emb=text.text_emb + self.out_proj(pooled))
