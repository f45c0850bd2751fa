"""Frame samplers: which frame indices of an n-frame video a model sees.

Every sampler is registered in `vl_adapters.core.registry.SAMPLERS` and has the signature

    sampler(num_video_frames, num_frames, *, train, rng, **options) -> list[int]

The answer is sorted (non-decreasing), every index is in [0, num_video_frames), and it holds at most
`num_frames` indices. A video shorter than the request gives fewer indices; the dataset pads the clip to
`num_frames` and marks the padding False in `frame_mask`. `rng` is a `random.Random`; samplers only draw
from it when `train` is true, so evaluation is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..core.registry import SAMPLERS

Sampler = Callable[..., list[int]]


def _check(num_video_frames: int, num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"a frame sampler needs num_frames >= 1, got {num_frames}")
    if num_video_frames < 0:
        raise ValueError(f"num_video_frames must be >= 0, got {num_video_frames}")


def _linspace(start: float, stop: float, count: int) -> list[float]:
    if count == 1:
        return [start]
    step = (stop - start) / (count - 1)
    return [start + i * step for i in range(count)]


@SAMPLERS.register("uniform")
def uniform(num_video_frames: int, num_frames: int, *, train: bool = False, rng: random.Random | None = None
            ) -> list[int]:
    """CLIP4Clip: `num_frames` indices at uniform positions from the first frame to the last (no
    randomness, in training too). A shorter video gives all its frames."""
    _check(num_video_frames, num_frames)
    n = num_video_frames
    if n <= num_frames:
        return list(range(n))
    return [round(x) for x in _linspace(0, n - 1, num_frames)]


@SAMPLERS.register("segment_random")
def segment_random(num_video_frames: int, num_frames: int, *, train: bool = False,
                   rng: random.Random | None = None) -> list[int]:
    """TSN: the video cut into `num_frames` equal segments, one frame per segment: a random offset in
    training, the segment's centre in evaluation."""
    _check(num_video_frames, num_frames)
    n = num_video_frames
    if n <= num_frames:
        return list(range(n))
    rng = rng or random.Random(0)
    out = []
    for k in range(num_frames):
        lo = (k * n) // num_frames
        hi = max(((k + 1) * n) // num_frames, lo + 1)  # exclusive
        out.append(rng.randrange(lo, hi) if train else lo + (hi - lo) // 2)
    return out


def _clip_frames(centres: list[int], clip_len: int, n: int) -> list[int]:
    """`clip_len` consecutive frames around each centre, shifted to stay inside [0, n)."""
    out = []
    for c in centres:
        start = min(max(c - clip_len // 2, 0), max(n - clip_len, 0))
        out.extend(min(start + j, n - 1) for j in range(clip_len))
    return sorted(out)


@SAMPLERS.register("clips")
def clips(num_video_frames: int, num_frames: int, *, train: bool = False, rng: random.Random | None = None,
          clip_len: int = 16) -> list[int]:
    """Tem-Adapter: N = num_frames / clip_len clip centres at linspace(0, n, N + 2)[1 : N + 1] (the two
    ends left out), each giving `clip_len` consecutive frames (8 x 16 = 128 in the paper). When the video
    is at least N frames long but shorter than a clip, frames repeat at the edge so the N x M layout
    holds; a video shorter than N frames gives all its frames (padded and masked by the dataset)."""
    _check(num_video_frames, num_frames)
    if clip_len < 1 or num_frames % clip_len:
        raise ValueError(f"sampler 'clips': num_frames ({num_frames}) must be a multiple of clip_len ({clip_len}); "
                         "pass sampler_options={'clip_len': M} with num_frames = N * M")
    n, count = num_video_frames, num_frames // clip_len
    if n < count or n == 0:
        return list(range(n))
    centres = [min(int(x), n - 1) for x in _linspace(0, n, count + 2)[1:count + 1]]
    return _clip_frames(centres, clip_len, n)


@SAMPLERS.register("sparse")
def sparse(num_video_frames: int, num_frames: int, *, train: bool = False, rng: random.Random | None = None,
           clip_len: int = 2) -> list[int]:
    """ClipBERT: a few short clips (num_frames / clip_len of them, `clip_len` consecutive frames each),
    one per equal segment of the video: at a random position inside the segment in training, at its
    centre in evaluation."""
    _check(num_video_frames, num_frames)
    if clip_len < 1 or num_frames % clip_len:
        raise ValueError(f"sampler 'sparse': num_frames ({num_frames}) must be a multiple of clip_len ({clip_len})")
    n, count = num_video_frames, num_frames // clip_len
    if n < num_frames:
        return list(range(n))
    rng = rng or random.Random(0)
    centres = []
    for k in range(count):
        lo = (k * n) // count
        hi = max(((k + 1) * n) // count, lo + 1)
        centres.append(rng.randrange(lo, hi) if train else lo + (hi - lo) // 2)
    return _clip_frames(centres, clip_len, n)


def sample_indices(name: str, num_video_frames: int, num_frames: int, *, train: bool, rng: random.Random,
                   **options) -> list[int]:
    """Run the sampler registered as `name` and check its answer."""
    indices = SAMPLERS.get(name)(num_video_frames, num_frames, train=train, rng=rng, **options)
    indices = [int(i) for i in indices]
    if len(indices) > num_frames or any(i < 0 or i >= num_video_frames for i in indices):
        raise ValueError(f"sampler {name!r} returned {len(indices)} indices {indices[:8]}... for a "
                         f"{num_video_frames}-frame video and num_frames={num_frames}; expected at most "
                         f"{num_frames} indices in [0, {num_video_frames})")
    return indices
