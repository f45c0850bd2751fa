from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class STAdapterBlock(nn.Module):
    """patches + up(conv3d_depthwise(down(patches))) over the (time, height, width) grid of each video.

    Frames come folded into the batch, only the real ones (as the backbone encodes them); frame_mask
    [b, T] says where each sits, so padded frames enter the convolution as zeros and are not returned.
    """

    def __init__(self, *, width: int, bottleneck: int, temporal_kernel: int, spatial_kernel: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.conv = nn.Conv3d(
            bottleneck, bottleneck, kernel_size=(temporal_kernel, spatial_kernel, spatial_kernel),
            padding=(temporal_kernel // 2, spatial_kernel // 2, spatial_kernel // 2), groups=bottleneck,
        )
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.conv.bias)
        # The last projection starts at zero: the adapted tower starts as the frozen one.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, patches: Tensor, frame_mask: Tensor, grid: tuple[int, int]) -> Tensor:
        """patches [N, P, C] (N = real frames, P = gh*gw) -> [N, P, C]."""
        gh, gw = grid
        b, t = frame_mask.shape
        hidden = self.down(patches.float())  # [N, P, c]
        flat_mask = frame_mask.flatten()
        padded = hidden.new_zeros(b * t, *hidden.shape[1:]).index_put((flat_mask,), hidden)
        volume = rearrange(padded, "(b t) (h w) c -> b c t h w", b=b, h=gh, w=gw)
        mixed = rearrange(self.conv(volume), "b c t h w -> (b t) (h w) c")[flat_mask]
        return (patches.float() + self.up(mixed)).to(patches.dtype)


def one_frame_layout(count: int, device: torch.device) -> Tensor:
    """Images encoded on their own: each is a one-frame video."""
    return torch.ones(count, 1, dtype=torch.bool, device=device)
