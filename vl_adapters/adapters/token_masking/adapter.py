from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ..st_adapter.adapter import vision_blocks
from .config import TokenMaskingConfig
from .modules import choose_patches, gather_patches, kept_count, motion_saliency, scatter_patches


def hook_points(backbone) -> tuple[nn.Module, nn.Module]:
    """(the module whose output is the token sequence about to enter the blocks, the vision tower)."""
    if backbone.family == "open_clip":
        visual = backbone.model.visual
        return visual.patch_dropout, visual  # patch_dropout runs after the positional embedding, before ln_pre
    if backbone.family == "hf":
        vision = backbone.model.vision_model
        return vision.embeddings, vision
    raise ValueError(f"token_masking: backbone family {backbone.family!r} is not supported (open_clip, hf)")


@register_adapter("token_masking")
class TokenMasking(Adapter):
    """MAC/SMAUG token masking: in training the ViT blocks see (1 - ratio) of each frame's patches (+ class token)."""

    config_class = TokenMaskingConfig
    stage = "backbone"
    families = ("open_clip", "hf")
    changes_text_tower = False  # it masks the vision tower's patch tokens alone

    def __init__(self, config: TokenMaskingConfig, dims) -> None:
        super().__init__(config, dims)
        self.num_patches = dims.grid[0] * dims.grid[1]
        self.keep = kept_count(self.num_patches, config.ratio)
        self._backbone: list = []  # a plain list, so the backbone is not registered as a submodule
        self._kept: Tensor | None = None  # [N, K] for the images in the tower now; None: nothing dropped

    @property
    def masking(self) -> bool:
        """Masking is a training device: evaluation and inference always see every patch."""
        return self.training and self.config.ratio > 0

    def attach(self, backbone) -> None:
        embed, tower = hook_points(backbone)
        embed.register_forward_hook(_Drop(self))
        tower.register_forward_hook(_Restore(self))
        self._backbone[:] = [backbone]

    def drop(self, tokens: Tensor) -> Tensor | None:
        """Tokens entering the blocks [N, prefix + P, C] -> [N, prefix + K, C] in training, else None."""
        self._kept = None
        if not self.masking:
            return None
        patches = tokens[:, tokens.shape[1] - self.num_patches:]
        if self.config.strategy == "random":
            scores = torch.rand(patches.shape[:2], device=tokens.device)
        else:
            layout = self._backbone[0].video_layout
            scores = motion_saliency(patches, None if layout is None else layout.frame_mask)
            scores = scores + 1e-6 * torch.rand_like(scores)  # ties (one-frame videos) broken at random
        self._kept = choose_patches(scores, self.keep)
        self._wrap_block_hooks()
        return gather_patches(tokens, self._kept, tokens.shape[1] - self.num_patches)

    def restore(self, output):
        """The tower's output with its patch tokens back on the full grid (zeros where dropped), so
        VideoFeatures.patch_tokens keeps its [B, T, P, C] contract."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None
        if isinstance(output, tuple):  # open_clip: (pooled, patch tokens without the class token)
            pooled, tokens = output
            return pooled, scatter_patches(tokens, kept, 0, self.num_patches)
        states = output.last_hidden_state  # transformers: [N, 1 + K, C]
        output["last_hidden_state"] = scatter_patches(states, kept, states.shape[1] - kept.shape[1], self.num_patches)
        return output

    def _wrap_block_hooks(self) -> None:
        """Another adapter's hook before a block (st_adapter's convolution over the patch grid) gets the full
        grid: the kept tokens are scattered onto it (zeros where dropped) before that hook and gathered back
        after it, so the block itself still runs on K tokens. Re-checked each masked forward: it holds
        whatever order the adapters were attached in."""
        blocks, batch_first = vision_blocks(self._backbone[0])
        for block in blocks:
            hooks = block._forward_pre_hooks
            if all(isinstance(h, _Regrid) for h in hooks.values()):
                continue
            mine = {h.full: key for key, h in hooks.items() if isinstance(h, _Regrid) and h.adapter is self}
            if not mine:
                block.register_forward_pre_hook(_Regrid(self, full=True, batch_first=batch_first), prepend=True,
                                                with_kwargs=True)
                block.register_forward_pre_hook(_Regrid(self, full=False, batch_first=batch_first), with_kwargs=True)
            else:
                hooks.move_to_end(mine[True], last=False)
                hooks.move_to_end(mine[False])

    def detach(self) -> None:
        if not self._backbone:
            return
        embed, tower = hook_points(self._backbone[0])
        blocks, _ = vision_blocks(self._backbone[0])
        for module in (embed, tower, *blocks):
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for key in [k for k, h in hooks.items() if isinstance(h, _Hook) and h.adapter is self]:
                    del hooks[key]
                    module._forward_pre_hooks_with_kwargs.pop(key, None)
        self._backbone.clear()

    def merge(self) -> bool:
        """Nothing to fold: masking never runs at inference, so a merged model simply drops the adapter."""
        self.detach()
        return True

    def forward(self, video, text, ctx) -> AdapterOutput:
        # Runs inside the vision tower; nothing to do after it.
        return AdapterOutput(video=video, text=text)


class _Hook:
    """Hooks are objects that refer to their adapter (not closures), so they deep-copy with the model."""

    def __init__(self, adapter: TokenMasking) -> None:
        self.adapter = adapter


class _Drop(_Hook):
    def __call__(self, module, args, output):
        return self.adapter.drop(output)


class _Restore(_Hook):
    def __call__(self, module, args, output):
        return self.adapter.restore(output)


class _Regrid(_Hook):
    """A block pre-hook: kept tokens -> full grid (full=True) or full grid -> kept tokens (full=False)."""

    def __init__(self, adapter: TokenMasking, *, full: bool, batch_first: bool) -> None:
        super().__init__(adapter)
        self.full, self.batch_first = full, batch_first

    def __call__(self, module, args, kwargs):
        kept = self.adapter._kept
        if kept is None:
            return None
        name = None if args else ("hidden_states" if "hidden_states" in kwargs else "q_x")
        x = args[0] if args else kwargs[name]
        x = x if self.batch_first else x.transpose(0, 1)
        if self.full:
            x = scatter_patches(x, kept, x.shape[1] - kept.shape[1], self.adapter.num_patches)
        else:
            x = gather_patches(x, kept, x.shape[1] - self.adapter.num_patches)
        x = x if self.batch_first else x.transpose(0, 1)
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, name: x})
