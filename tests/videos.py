"""Test helper: real small video files encoded with PyAV whose frames say which index they are.

Frame i is one flat colour: red = 16 + 32 * (i % 8), green = 16 + 32 * ((i // 8) % 8), blue = 128.
Flat frames survive lossy H.264 / MPEG-4 coding within a few levels, so `frame_index_of` reads the
index back from a decoded (even resized or cropped) frame; 64 distinct indices are enough here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def frame_colour(index: int) -> tuple[int, int, int]:
    return 16 + 32 * (index % 8), 16 + 32 * ((index // 8) % 8), 128


def write_video(path: str | Path, num_frames: int = 12, *, height: int = 48, width: int = 64,
                codec: str = "h264", fps: int = 10) -> Path:
    """Encode `num_frames` index-coloured frames to `path` (container from the suffix: .mp4, .avi, ...)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec_name = {"h264": "libx264", "mpeg4": "mpeg4"}.get(codec, codec)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec_name, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec_name == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "10", "g": "4"}  # several key frames to seek to
        else:
            stream.options = {"qscale": "2", "g": "4"}
        for i in range(num_frames):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[...] = frame_colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_index_of(frame: torch.Tensor | np.ndarray) -> int:
    """The index written into a decoded frame [3, H, W] (uint8) by write_video."""
    frame = torch.as_tensor(frame).float()
    red, green = frame[0].mean().item(), frame[1].mean().item()
    return int(round((red - 16) / 32)) + 8 * int(round((green - 16) / 32))


def frame_indices_of(frames: torch.Tensor) -> list[int]:
    return [frame_index_of(f) for f in frames]


def write_corrupt(path: str | Path, size: int = 2048, seed: int = 0) -> Path:
    """A file with a video suffix whose bytes are noise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_empty(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path
