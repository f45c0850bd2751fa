from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig


@dataclass
class STAdapterConfig(AdapterConfig):
    """ST-Adapter inside the frozen vision tower: before each chosen block, the patch tokens go through
    down-projection -> depthwise 3D convolution over (time, patch grid) -> up-projection (zero-initialised)
    and are added back (residual).

    bottleneck_ratio  bottleneck width as a fraction of the tower's width (the paper: 384 of 768).
    temporal_kernel   odd kernel size over frames; spatial_kernel: 1 (1x1) or 3 (3x3) over the patch grid.
    blocks            indices of the tower's blocks to adapt (negative counts from the end); None: all.
    """

    bottleneck_ratio: float = 0.5
    temporal_kernel: int = 3
    spatial_kernel: int = 1
    blocks: list[int] | None = None
