"""The feature contracts between backbone, adapters and task heads.

Everything after the backbone sees only these two objects, which is what lets one adapter run on
open_clip, on transformers CLIP and on features read back from the cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


class FeatureShapeError(ValueError):
    """A feature tensor does not have the shape its contract promises."""


def _check(name: str, tensor: Tensor, pattern: str, sizes: dict[str, int]) -> None:
    """Check `tensor` against a pattern such as "B T D", binding new letters in `sizes`."""
    axes = pattern.split()
    if tensor.ndim != len(axes):
        raise FeatureShapeError(f"{name}: expected shape [{', '.join(axes)}], got {list(tensor.shape)}")
    for axis, size in zip(axes, tensor.shape, strict=True):
        expected = sizes.setdefault(axis, size)
        if expected != size:
            bound = ", ".join(f"{k}={v}" for k, v in sizes.items())
            raise FeatureShapeError(
                f"{name}: expected shape [{', '.join(axes)}] with {bound}, got {list(tensor.shape)}"
            )


class _FeatureOps:
    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def index(self, idx: Tensor):
        """Select (or repeat) items along the batch axis."""
        return _index(self, idx)

    def to(self, device: torch.device | str):
        return _apply(self, lambda t: t.to(device))

    def float(self):
        """Floating tensors to fp32 (adapters run in fp32 whatever the backbone's precision)."""
        return _apply(self, lambda t: t.float() if t.is_floating_point() else t)


@dataclass(frozen=True)
class VideoFeatures(_FeatureOps):
    """Per-frame features of a batch of videos.

    frame_emb     [B, T, D]     per-frame embedding in the joint space
    patch_tokens  [B, T, N, C]  per-frame patch tokens (CLS excluded), or None
    frame_mask    [B, T] bool   True for real frames
    grid          (gh, gw)      patch grid, gh * gw = N
    video_emb     [B, D]        pooled video embedding once an adapter has made one, else None
    """

    frame_emb: Tensor
    frame_mask: Tensor
    patch_tokens: Tensor | None = None
    grid: tuple[int, int] | None = None
    video_emb: Tensor | None = None

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        _check("VideoFeatures.frame_emb", self.frame_emb, "B T D", sizes)
        _check("VideoFeatures.frame_mask", self.frame_mask, "B T", sizes)
        if self.frame_mask.dtype != torch.bool:
            raise FeatureShapeError(f"VideoFeatures.frame_mask: expected dtype torch.bool, got {self.frame_mask.dtype}")
        if self.patch_tokens is not None:
            _check("VideoFeatures.patch_tokens", self.patch_tokens, "B T N C", sizes)
            if self.grid is None or self.grid[0] * self.grid[1] != sizes["N"]:
                raise FeatureShapeError(
                    f"VideoFeatures.grid: expected (gh, gw) with gh*gw = N = {sizes['N']}, got {self.grid}"
                )
        if self.video_emb is not None:
            _check("VideoFeatures.video_emb", self.video_emb, "B D", sizes)

    @property
    def batch_size(self) -> int:
        return self.frame_emb.shape[0]

    @property
    def num_frames(self) -> int:
        return self.frame_emb.shape[1]



@dataclass(frozen=True)
class TextFeatures(_FeatureOps):
    """Features of a batch of texts.

    text_emb      [B, D]      sentence embedding in the joint space
    token_states  [B, L, C']  last hidden states of the text tower
    token_mask    [B, L] bool True for real tokens
    input_ids     [B, L]      token ids, or None
    texts         list of B strings, or None
    """

    text_emb: Tensor
    token_states: Tensor | None = None
    token_mask: Tensor | None = None
    input_ids: Tensor | None = None
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        _check("TextFeatures.text_emb", self.text_emb, "B D", sizes)
        if (self.token_states is None) != (self.token_mask is None):
            raise FeatureShapeError("TextFeatures: token_states and token_mask must be given together")
        if self.token_states is not None:
            _check("TextFeatures.token_states", self.token_states, "B L C", sizes)
            _check("TextFeatures.token_mask", self.token_mask, "B L", sizes)
            if self.token_mask.dtype != torch.bool:
                raise FeatureShapeError(f"TextFeatures.token_mask: expected dtype torch.bool, got {self.token_mask.dtype}")
        if self.input_ids is not None:
            _check("TextFeatures.input_ids", self.input_ids, "B L", sizes)
        if self.texts is not None and len(self.texts) != sizes["B"]:
            raise FeatureShapeError(f"TextFeatures.texts: expected {sizes['B']} strings, got {len(self.texts)}")

    @property
    def batch_size(self) -> int:
        return self.text_emb.shape[0]




def check_against(features: VideoFeatures | TextFeatures, dims) -> None:
    """Given (cached) features must have the widths of the backbone `dims` describes; NaN in their
    embeddings is warned about (it would give NaN scores)."""
    import warnings

    if isinstance(features, VideoFeatures):
        widths = [("frame_emb", features.frame_emb, dims.embed_dim), ("patch_tokens", features.patch_tokens,
                                                                        dims.vision_width)]
        embedding = features.frame_emb
    else:
        widths = [("text_emb", features.text_emb, dims.embed_dim), ("token_states", features.token_states,
                                                                     dims.text_width)]
        embedding = features.text_emb
    for name, tensor, width in widths:
        if tensor is not None and tensor.shape[-1] != width:
            raise FeatureShapeError(f"{type(features).__name__}.{name}: expected width {width} (this backbone's), "
                                    f"got {tensor.shape[-1]}: features of another backbone?")
    broken = embedding.isnan().flatten(1).any(1)
    if broken.any():
        rows = broken.nonzero().flatten().tolist()
        kind = "video(s)" if isinstance(features, VideoFeatures) else "text(s)"
        texts = getattr(features, "texts", None)
        first = f" (the first: {texts[rows[0]]!r})" if texts else ""
        warnings.warn(f"{type(features).__name__}: {kind} {rows[:8]}{' ...' if len(rows) > 8 else ''} of the "
                      f"{len(broken)} given{first} hold NaN values; their scores will be NaN",
                      RuntimeWarning, stacklevel=4)


def _apply(features, fn):
    changes = {}
    for field in dataclasses.fields(features):
        value = getattr(features, field.name)
        if isinstance(value, Tensor):
            changes[field.name] = fn(value)
    return dataclasses.replace(features, **changes)


def _index(features, idx: Tensor):
    changes = {}
    for field in dataclasses.fields(features):
        value = getattr(features, field.name)
        if isinstance(value, Tensor):
            changes[field.name] = value.index_select(0, idx.to(value.device))
        elif field.name == "texts" and value is not None:
            changes[field.name] = [value[i] for i in idx.tolist()]
    return dataclasses.replace(features, **changes)


def concat_video_features(parts: list[VideoFeatures]) -> VideoFeatures:
    """Concatenate along the batch axis (all parts must share T, N and grid)."""
    return _concat(parts)


def concat_text_features(parts: list[TextFeatures]) -> TextFeatures:
    """Concatenate along the batch axis; token axes are padded to the longest part."""
    longest = max((p.token_states.shape[1] for p in parts if p.token_states is not None), default=0)
    padded = [_pad_tokens(p, longest) for p in parts]
    return _concat(padded)


def _pad_tokens(features: TextFeatures, length: int) -> TextFeatures:
    if features.token_states is None or features.token_states.shape[1] == length:
        return features
    extra = length - features.token_states.shape[1]
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, extra) if t.ndim == 3 else (0, extra))  # noqa: E731
    return features.replace(
        token_states=pad(features.token_states),
        token_mask=pad(features.token_mask),
        input_ids=None if features.input_ids is None else pad(features.input_ids),
    )


def _concat(parts):
    first = parts[0]
    changes = {}
    for field in dataclasses.fields(first):
        value = getattr(first, field.name)
        if isinstance(value, Tensor):
            changes[field.name] = torch.cat([getattr(p, field.name) for p in parts])
        elif field.name == "texts" and value is not None:
            changes[field.name] = [t for p in parts for t in p.texts]
    return dataclasses.replace(first, **changes)
