"""Video readers: decord by default, PyAV as the fallback.

`read_video(path, choose, size=..., reader="auto")` opens a file, learns its frame count, asks
`choose(num_frames) -> indices` which frames to take, and decodes only those, in order, at the target
size (the decoder's scaler does the resize, which is much cheaper than decoding full frames and
resizing tensors). The answer records which reader decoded the clip.

Readers are opened per call and never kept on the dataset, so a dataset pickles into DataLoader
workers and each worker decodes on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

# Threads per decoder. Parallelism comes from DataLoader workers; one thread each avoids
# oversubscribing the cores. Override with VL_ADAPTERS_DECODE_THREADS.
DECODE_THREADS = int(os.environ.get("VL_ADAPTERS_DECODE_THREADS", "1"))

Size = int | tuple[int, int] | None


class VideoReadError(RuntimeError):
    """A video that cannot be read; `reason` says why (missing, empty, corrupt, no frames)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class Clip:
    frames: torch.Tensor  # uint8 [n, 3, H, W], n = len(indices)
    indices: list[int]  # the frame indices read, in order
    num_video_frames: int
    reader: str  # "decord" or "pyav"


def decode_shape(height: int, width: int, size: Size) -> tuple[int, int, tuple[int, int] | None]:
    """(decode height, decode width, crop (h, w) or None) for a stored frame of height x width.
    An int size resizes the shorter side to `size` and centre-crops a square; (h, w) resizes exactly."""
    if size is None:
        return height, width, None
    if isinstance(size, (tuple, list)):
        h, w = int(size[0]), int(size[1])
        return h, w, None
    s = int(size)
    scale = s / min(height, width)
    h, w = max(s, round(height * scale)), max(s, round(width * scale))
    return h, w, (s, s)


def _centre_crop(frames: torch.Tensor, crop: tuple[int, int] | None) -> torch.Tensor:
    if crop is None:
        return frames
    h, w = frames.shape[-2:]
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return frames[..., top:top + crop[0], left:left + crop[1]]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "file not found")
    if not path.is_file():
        raise VideoReadError(path, "not a file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _spread(unique: list[int], decoded: np.ndarray, wanted: Sequence[int]) -> np.ndarray:
    """Frames for `wanted` (may repeat) from frames decoded once per index in `unique`."""
    if len(unique) == len(wanted):
        return decoded
    where = {idx: k for k, idx in enumerate(unique)}
    return decoded[[where[i] for i in wanted]]


def _probe_pyav(path: Path) -> tuple[int, int] | None:
    """(height, width) from the container header without decoding, or None."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return (ctx.height, ctx.width) if ctx.height and ctx.width else None
    except Exception:
        return None


def _read_decord(path: Path, choose: Callable[[int], list[int]], size: Size) -> Clip:
    import decord

    hw = None if size is None else _probe_pyav(path)
    if size is not None and hw is None:  # no PyAV to read the header: ask decord at the stored size
        probe = decord.VideoReader(str(path), num_threads=DECODE_THREADS)
        hw = tuple(probe[0].shape[:2])
        del probe
    if size is None:
        vr = decord.VideoReader(str(path), num_threads=DECODE_THREADS)
        crop = None
    else:
        h, w, crop = decode_shape(hw[0], hw[1], size)
        vr = decord.VideoReader(str(path), width=w, height=h, num_threads=DECODE_THREADS)
    n = len(vr)
    if n == 0:
        raise VideoReadError(path, "no decodable frames")
    wanted = list(choose(n))
    if not wanted:
        raise VideoReadError(path, "the sampler chose no frames")
    unique = sorted(set(wanted))
    decoded = vr.get_batch(unique).asnumpy()  # [u, H, W, 3], read in increasing order
    frames = torch.from_numpy(np.ascontiguousarray(_spread(unique, decoded, wanted))).permute(0, 3, 1, 2)
    return Clip(frames=_centre_crop(frames, crop).contiguous(), indices=wanted, num_video_frames=n, reader="decord")


def _read_pyav(path: Path, choose: Callable[[int], list[int]], size: Size) -> Clip:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoReadError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if DECODE_THREADS != 1 else "SLICE"
        ctx = stream.codec_context
        if ctx.height and ctx.width:
            h, w, crop = decode_shape(ctx.height, ctx.width, size)
        else:
            h = w = crop = None
        n = stream.frames
        if n <= 0:  # frame count not in the header: decode everything once (rare; small files)
            every = [_to_array(f, h, w) for f in container.decode(stream)]
            if not every:
                raise VideoReadError(path, "no decodable frames")
            n = len(every)
            wanted = list(choose(n))
            decoded = np.stack([every[i] for i in wanted])
        else:
            wanted = list(choose(n))
            if not wanted:
                raise VideoReadError(path, "the sampler chose no frames")
            unique = sorted(set(wanted))
            got: list[np.ndarray] = []
            last = None
            position = 0
            for frame in container.decode(stream):  # one pass, in order; stop after the last index
                if position == unique[len(got)]:
                    got.append(_to_array(frame, h, w))
                    if len(got) == len(unique):
                        break
                last = frame
                position += 1
            if not got and last is None:
                raise VideoReadError(path, "no decodable frames")
            while len(got) < len(unique):  # header over-counted the frames: repeat the last one
                got.append(got[-1] if got else _to_array(last, h, w))
            decoded = _spread(unique, np.stack(got), wanted)
    frames = torch.from_numpy(np.ascontiguousarray(decoded)).permute(0, 3, 1, 2)
    return Clip(frames=_centre_crop(frames, crop).contiguous(), indices=wanted, num_video_frames=n, reader="pyav")


def _to_array(frame, height: int | None, width: int | None) -> np.ndarray:
    if height is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=width, height=height)


_decord_missing_logged = False
_decord_quiet = False


@contextlib.contextmanager
def _decoders_silenced():
    """Keep the decoders' own logging off the terminal while they read: a file they cannot read gets one
    line from us (VideoReadError's reason, then the skip or error message), not 1 to 6 native lines more.
    decord's FFmpeg is set quiet once; its C++ errors, written straight to the process's stderr (fd 2),
    go to /dev/null for the duration of the read; PyAV's are captured."""
    global _decord_quiet
    if not _decord_quiet and decord_available():
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        _decord_quiet = True
    with contextlib.ExitStack() as stack:
        try:
            import av.logging

            stack.enter_context(av.logging.Capture())
        except ImportError:
            pass
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def read_video(path: str | Path, choose: Callable[[int], list[int]], *, size: Size = None,
               reader: str = "auto") -> Clip:
    """Decode the frames `choose(num_video_frames)` picks from `path`.

    reader: "auto" tries decord and falls back to PyAV when decord is not installed or fails to open or
    decode the file (the fallback is logged and the returned Clip says "pyav"); "decord" / "pyav" use
    only that reader. Raises VideoReadError with the reason when no reader can read the file.
    """
    global _decord_missing_logged
    path = Path(path)
    _check_file(path)
    if reader not in ("auto", "decord", "pyav"):
        raise ValueError(f"reader must be 'auto', 'decord' or 'pyav', got {reader!r}")
    errors = []
    if reader in ("auto", "decord"):
        if decord_available():
            try:
                with _decoders_silenced():
                    return _read_decord(path, choose, size)
            except VideoReadError:
                raise
            except Exception as error:  # decord raises its own error types for unreadable files
                errors.append(f"decord: {_short(error)}")
                if reader == "decord":
                    raise VideoReadError(path, errors[-1]) from error
                log.info("decord could not read %s (%s); trying PyAV", path, _short(error))
        elif reader == "decord":
            raise VideoReadError(path, "decord is not installed (pip install 'vl-adapters[video]')")
        elif not _decord_missing_logged:
            _decord_missing_logged = True
            log.warning("decord is not installed; reading videos with PyAV")
    try:
        with _decoders_silenced():
            return _read_pyav(path, choose, size)
    except VideoReadError:
        raise
    except ImportError as error:
        errors.append("PyAV is not installed")
        raise VideoReadError(path, "; ".join(errors)) from error
    except Exception as error:
        errors.append(f"pyav: {_short(error)}")
        raise VideoReadError(path, "; ".join(errors)) from error


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}"
