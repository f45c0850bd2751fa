"""The two aligners as plain modules (no feature objects): tensors in, tensors out."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ...core.pooling import masked_mean


def sinusoid_positions(length: int, width: int, *, device=None) -> Tensor:
    """[length, width] fixed sinusoidal positions (sin on even channels, cos on odd), as in the paper."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def future_mask(length: int, device=None) -> Tensor:
    """[T, T] bool, True where attention is forbidden: query i may see keys j <= i only."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


@dataclass
class GuidanceText:
    """The guidance of each video as tensors: its description(s) in the joint space and their token states.

    sentences [B,K,D] and sentence_mask [B,K]: the sentence embedding of each of the video's K texts (the
    semantic aligner's refined one when both aligners run); tokens [B,M,C'] and token_mask [B,M]: their
    token states (None when the features carry none).
    """

    sentences: Tensor
    sentence_mask: Tensor
    tokens: Tensor | None = None
    token_mask: Tensor | None = None

    def mean_sentence(self) -> Tensor:
        """[B,D]: the mean description of each video (zero for a video without one)."""
        return masked_mean(self.sentences, self.sentence_mask, dim=1)


class TemporalAligner(nn.Module):
    """An encoder over frames (its pooled output is the video vector) and a causal decoder that predicts each
    next frame state from the past (the same encoder run causally), reading the event description as extra
    memory."""

    def __init__(self, *, width: int, heads: int, ffn_dim: int, dropout: float, official_compat: bool,
                 text_width: int | None = None) -> None:
        super().__init__()
        self.official_compat = official_compat
        # The official layers are post-norm ReLU; pre-norm GELU trains more stably behind a zero residual.
        layer_kwargs = dict(d_model=width, nhead=heads, dim_feedforward=ffn_dim, dropout=dropout, batch_first=True,
                            activation="relu" if official_compat else "gelu", norm_first=not official_compat)
        self.position_dropout = nn.Dropout(dropout)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer_kwargs), num_layers=1,
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer_kwargs), num_layers=1)
        for parameter in self.parameters():
            if parameter.ndim > 1:
                nn.init.xavier_uniform_(parameter)
        if not official_compat:
            # Residual on top of meanP, zero at init: the pooled vector starts as the backbone's.
            self.pool_proj = nn.Linear(width, width)
            nn.init.zeros_(self.pool_proj.weight)
            nn.init.zeros_(self.pool_proj.bias)
            # The guidance enters the decoder's memory as tokens of its own: its sentence embedding(s)
            # (joint space) and its token states (text width), each through a learned map.
            self.guidance_sentence_proj = nn.Linear(width, width)
            self.guidance_token_proj = nn.Linear(text_width or width, width)

    def _embed(self, frames: Tensor) -> Tensor:
        positions = sinusoid_positions(frames.shape[1], frames.shape[2], device=frames.device)
        return self.position_dropout(frames + positions)

    def encode(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """[B,T,D] bidirectional encoder states (padded frames are never attended to)."""
        return self.encoder(self._embed(frames), src_key_padding_mask=~frame_mask)

    def pool(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """[B,D] video vector. Default: meanP of unit frames + zero-initialised projection of the pooled states.

        Bidirectional, while the prediction memory is the same encoder run causally: measured on the synthetic
        temporal benchmark, a causal pooling (one encoder function for both) fitted less (90.4% against 93.8%
        training accuracy, every seed) and relied less on order (shuffle drop 7 against 15 points); see
        docs/tem_adapter.md."""
        states = self.encode(frames, frame_mask)
        pooled = masked_mean(states, frame_mask, dim=1)
        if self.official_compat:
            return pooled
        base = masked_mean(F.normalize(frames, dim=-1), frame_mask, dim=1)
        return base + self.pool_proj(pooled)

    def guidance_memory(self, guidance: GuidanceText) -> tuple[Tensor, Tensor]:
        """[B,S,D] memory tokens of the guidance (projected sentences, then projected token states) and
        their mask [B,S] (True = real)."""
        parts = [self.guidance_sentence_proj(guidance.sentences)]
        masks = [guidance.sentence_mask]
        if guidance.tokens is not None:
            parts.append(self.guidance_token_proj(guidance.tokens))
            masks.append(guidance.token_mask)
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def predict(self, frames: Tensor, frame_mask: Tensor, guidance: GuidanceText | None) -> tuple[Tensor, Tensor]:
        """Predictions [B,T,D] indexed by the frame they predict, and where they count [B,T] bool.

        Fixed: the prediction of frame t+1 is the decoder output at t; decoder self-attention, the
        encoder that builds the memory and the decoder's cross-attention to it are all causal, so it sees
        frames <= t only and never the frame it predicts (frame 0 has no prediction). The guidance
        tokens follow the frame states in the memory and are visible to every position: the decoder
        attends over [frame states <= t ; description tokens], so the description changes both what
        is attended and what is predicted. (Added to every memory token, as the official code does, it
        would be a constant on all keys, which cancels in the softmax.) Padding must be trailing (as
        collated), so causal attention never reaches it from a real frame.
        official_compat: the official leaky variant — the mean guidance vector added to a bidirectional
        memory, and the decoder output at t "predicts" frame t itself, with the diagonal visible.
        """
        b, t, d = frames.shape
        x = self._embed(frames)
        causal = future_mask(t, frames.device)
        if self.official_compat:
            memory = self.encoder(x, src_key_padding_mask=~frame_mask)
            if guidance is not None:
                memory = memory + guidance.mean_sentence()[:, None]
            out = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=~frame_mask)
            return out, frame_mask
        memory = self.encoder(x, mask=causal, src_key_padding_mask=~frame_mask)
        memory_mask, memory_padding = causal, ~frame_mask
        if guidance is not None:
            text, text_mask = self.guidance_memory(guidance)
            memory = torch.cat([memory, text], dim=1)
            memory_mask = torch.cat([causal, causal.new_zeros(t, text.shape[1])], dim=1)
            memory_padding = torch.cat([memory_padding, ~text_mask], dim=1)
        out = self.decoder(x, memory, tgt_mask=causal, memory_mask=memory_mask,
                           memory_key_padding_mask=memory_padding)
        predictions = torch.cat([out.new_zeros(b, 1, d), out[:, :-1]], dim=1)
        valid = torch.cat([frame_mask.new_zeros(b, 1), frame_mask[:, 1:] & frame_mask[:, :-1]], dim=1)
        return predictions, valid


class GatedAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections and a key mask (True = attend)."""

    def __init__(self, *, width: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=qkv_bias)
        self.k_proj = nn.Linear(width, width, bias=qkv_bias)
        self.v_proj = nn.Linear(width, width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        q = rearrange(self.q_proj(queries), "p n (h c) -> p h n c", h=self.heads)
        k = rearrange(self.k_proj(keys), "p m (h c) -> p h m c", h=self.heads)
        v = rearrange(self.v_proj(keys), "p m (h c) -> p h m c", h=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.proj_dropout(self.proj(rearrange(attended, "p h n c -> p n (h c)")))


class SemanticDecoderLayer(nn.Module):
    """Pre-norm: self-attention over the candidate's tokens, cross-attention to its frames, MLP."""

    def __init__(self, *, width: int, heads: int, dropout: float, qkv_bias: bool) -> None:
        super().__init__()
        self.self_attn = GatedAttention(width=width, heads=heads, qkv_bias=qkv_bias, dropout=dropout)
        self.cross_attn = GatedAttention(width=width, heads=heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, token_mask: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        normed = self.norm1(tokens)
        tokens = tokens + self.self_attn(normed, normed, token_mask)
        tokens = tokens + self.cross_attn(self.norm2(tokens), memory, memory_mask)
        return tokens + self.dropout(self.mlp(self.norm3(tokens)))


class SemanticAligner(nn.Module):
    """Refines a candidate's text embedding from its own video: delta [P, D] = gate * decoder(tokens, frames)."""

    def __init__(self, *, text_dim: int, video_dim: int, embed_dim: int, width: int, heads: int, layers: int,
                 dropout: float, gate_init: float) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(video_dim), nn.Linear(video_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, width))
        self.layers = nn.ModuleList(
            SemanticDecoderLayer(width=width, heads=heads, dropout=dropout, qkv_bias=False) for _ in range(layers)
        )
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Per-channel gate on the residual; zero (default) makes the model start as the backbone.
        self.gate = nn.Parameter(torch.full((embed_dim,), float(gate_init)))

    def forward(self, tokens: Tensor, token_mask: Tensor, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """tokens [P,L,C], token_mask [P,L], frames [P,T,D], frame_mask [P,T] -> delta [P,D]."""
        # A row without any real token (an empty padding candidate) still attends to its first slot.
        first = torch.zeros_like(token_mask)
        first[:, 0] = True
        token_mask = token_mask | (first & ~token_mask.any(1, keepdim=True))
        memory = self.memory_proj(frames)
        x = self.text_proj(tokens)
        for layer in self.layers:
            x = layer(x, token_mask, memory, frame_mask)
        return self.gate * masked_mean(self.out_proj(x), token_mask, dim=1)
