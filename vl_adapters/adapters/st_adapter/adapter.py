from __future__ import annotations

import torch
from torch import nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.config import ConfigError
from .config import STAdapterConfig
from .modules import STAdapterBlock, one_frame_layout


def vision_blocks(backbone) -> tuple[nn.ModuleList, bool]:
    """The vision tower's blocks and whether they take tokens batch-first ([N, L, C]) or not ([L, N, C])."""
    if backbone.family == "open_clip":
        transformer = backbone.model.visual.transformer
        return transformer.resblocks, getattr(transformer, "batch_first", True)
    if backbone.family == "hf":
        return backbone.model.vision_model.encoder.layers, True
    raise ValueError(f"st_adapter: backbone family {backbone.family!r} is not supported (open_clip, hf)")


@register_adapter("st_adapter")
class STAdapter(Adapter):
    """ST-Adapter (Pan et al., 2022) in the frozen ViT through forward pre-hooks: the backbone's code is
    untouched. The hooks read `backbone.video_layout` (set by encode_video) to put the frames folded
    into the batch back on their time axis."""

    config_class = STAdapterConfig
    stage = "backbone"
    families = ("open_clip", "hf")
    changes_text_tower = False  # its hooks sit on the vision tower's blocks alone

    def __init__(self, config: STAdapterConfig, dims) -> None:
        super().__init__(config, dims)
        if config.temporal_kernel < 1 or config.temporal_kernel % 2 == 0:
            raise ConfigError(f"st_adapter.temporal_kernel must be odd and >= 1, got {config.temporal_kernel}")
        if config.spatial_kernel not in (1, 3):
            raise ConfigError(f"st_adapter.spatial_kernel must be 1 or 3, got {config.spatial_kernel}")
        if not 0 < config.bottleneck_ratio <= 4:
            raise ConfigError(f"st_adapter.bottleneck_ratio must be in (0, 4], got {config.bottleneck_ratio}")
        self.bottleneck = max(1, round(dims.vision_width * config.bottleneck_ratio))
        self.blocks = nn.ModuleDict()  # keyed by block index; built in attach, once the depth is known
        self._backbone: list = []  # a plain list, so the backbone is not registered as a submodule

    def _block_indices(self, depth: int) -> list[int]:
        chosen = range(depth) if self.config.blocks is None else self.config.blocks
        indices = []
        for index in chosen:
            if not -depth <= index < depth:
                raise ConfigError(f"st_adapter.blocks: index {index} is out of range for a tower of {depth} blocks")
            indices.append(index % depth)
        if len(set(indices)) != len(indices):
            raise ConfigError(f"st_adapter.blocks lists a block twice: {self.config.blocks}")
        return sorted(indices)

    def attach(self, backbone) -> None:
        tower, self._batch_first = vision_blocks(backbone)
        device = backbone.device
        for index in self._block_indices(len(tower)):
            key = str(index)
            if key not in self.blocks:  # load_adapters builds, attaches, then loads the state
                self.blocks[key] = STAdapterBlock(
                    width=self.dims.vision_width, bottleneck=self.bottleneck,
                    temporal_kernel=self.config.temporal_kernel, spatial_kernel=self.config.spatial_kernel,
                ).to(device)
            tower[index].register_forward_pre_hook(_BlockHook(self, key), with_kwargs=True)
        self._backbone[:] = [backbone]

    def run_block(self, key: str, tokens):
        """tokens as the block receives them -> tokens with the adapter's residual on the patch tokens."""
        backbone = self._backbone[0]
        x = tokens if self._batch_first else tokens.transpose(0, 1)  # [N, L, C]
        layout = backbone.video_layout
        frame_mask = one_frame_layout(x.shape[0], x.device) if layout is None else layout.frame_mask.to(x.device)
        patches_count = self.dims.grid[0] * self.dims.grid[1]
        prefix, patches = x[:, :-patches_count], x[:, -patches_count:]  # class token(s) stay as they are
        adapted = self.blocks[key](patches, frame_mask, self.dims.grid)
        out = torch.cat([prefix, adapted], dim=1)
        return out if self._batch_first else out.transpose(0, 1)

    def detach(self) -> None:
        if not self._backbone:
            return
        tower, _ = vision_blocks(self._backbone[0])
        for block in tower:
            for hook_id, hook in list(block._forward_pre_hooks.items()):
                if isinstance(hook, _BlockHook) and hook.adapter is self:
                    del block._forward_pre_hooks[hook_id]
                    block._forward_pre_hooks_with_kwargs.pop(hook_id, None)
        self._backbone.clear()

    def forward(self, video, text, ctx) -> AdapterOutput:
        # Runs inside the vision tower; nothing to do after it.
        return AdapterOutput(video=video, text=text)


class _BlockHook:
    """A forward pre-hook that deep-copies with the model (it refers to its adapter, not a closure)."""

    def __init__(self, adapter: STAdapter, key: str) -> None:
        self.adapter, self.key = adapter, key

    def __call__(self, module, args, kwargs):
        if args:
            return (self.adapter.run_block(self.key, args[0]), *args[1:]), kwargs
        name = "hidden_states" if "hidden_states" in kwargs else "q_x"
        return args, {**kwargs, name: self.adapter.run_block(self.key, kwargs[name])}
