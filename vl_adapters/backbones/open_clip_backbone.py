"""open_clip backbones: `open_clip:<model name>` and the tiny configs shipped with the package."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..core.adapter import BackboneDims
from ..core.registry import BACKBONES
from .base import Backbone

CONFIG_DIR = Path(__file__).parent / "configs"


class OpenClipBackbone(Backbone):
    family = "open_clip"

    def __init__(self, *, spec: str, model, tokenizer, **kwargs) -> None:
        visual = model.visual
        grid = tuple(visual.grid_size)
        dims = BackboneDims(
            embed_dim=int(visual.output_dim),
            vision_width=int(visual.ln_post.normalized_shape[0]),
            text_width=int(model.ln_final.normalized_shape[0]),
            grid=(int(grid[0]), int(grid[1])),
            context_length=int(model.context_length),
            image_size=int(visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size),
            text_layers=len(model.transformer.resblocks),
        )
        mean = getattr(visual, "image_mean", None) or _OPENAI_MEAN
        std = getattr(visual, "image_std", None) or _OPENAI_STD
        super().__init__(
            spec=spec, model=model, dims=dims, mean=mean, std=std,
            logit_scale=float(model.logit_scale.detach().exp()), **kwargs,
        )
        self.tokenizer = tokenizer
        # The patch tokens come from the ViT's own API rather than from a hook on its internals.
        visual.output_tokens = True
        if getattr(visual, "pool_type", "tok") != "tok" or getattr(visual, "attn_pool", None) is not None:
            raise ValueError(f"{spec}: only ViT towers with a CLS token are supported (pool_type 'tok')")

    def vision_tower(self):
        return self.model.visual

    def _encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        dtype = next(self.model.visual.parameters()).dtype
        pooled, tokens = self.model.visual(images.to(dtype))
        return pooled, tokens

    def _encode_tokens(self, input_ids: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        captured = {}
        # ln_final's output is the text tower's last hidden state; encode_text pools and projects it.
        handle = self.model.ln_final.register_forward_hook(lambda m, i, o: captured.__setitem__("states", o))
        try:
            emb = self.model.encode_text(input_ids)
        finally:
            handle.remove()
        return emb, captured["states"]

    def tokenize(self, texts):
        ids = self.tokenizer(list(texts))
        return ids, self.token_mask_from_ids(ids)

    def token_mask_from_ids(self, input_ids: Tensor) -> Tensor:
        # CLIP's BPE pads with 0 after the end-of-text token.
        return input_ids != 0

    def token_count(self, text: str) -> int | None:
        encode = getattr(self.tokenizer, "encode", None)  # SimpleTokenizer: BPE ids without start/end
        return len(encode(text)) + 2 if callable(encode) else None


_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@BACKBONES.register("open_clip")
def load_open_clip(name: str, *, pretrained: str | None = None, **kwargs) -> OpenClipBackbone:
    import open_clip

    spec = f"open_clip:{name}"
    if name.endswith(".json"):  # a model config file of one's own: registered under its file name
        if not Path(name).is_file():
            raise FileNotFoundError(f"{spec}: no such open_clip model config file")
        open_clip.add_model_config(name)
        name = Path(name).stem
    is_file = pretrained is not None and Path(pretrained).is_file()
    if pretrained is not None and not is_file:
        if "/" in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin")):
            raise FileNotFoundError(f"{spec}: pretrained checkpoint {pretrained!r} does not exist")
        _check_tag(name, pretrained)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
    except Exception as error:  # a local file open_clip cannot read or load: say how it differs, in one line
        if not is_file:
            raise
        _explain_unloadable(name, pretrained, error)
    tokenizer = open_clip.get_tokenizer(name)
    backbone = OpenClipBackbone(spec=spec, model=model, tokenizer=tokenizer, **kwargs)
    backbone.pretrained, backbone.random_weights = _source(pretrained), not pretrained
    return backbone


def _check_tag(name: str, tag: str) -> None:
    """A tag open_clip knows for `name`, whose weights are in the local cache or can be downloaded now: the
    hub client would otherwise retry for about a minute before failing without a network."""
    import open_clip

    from .base import BackboneWeightsError
    from .hub import cached, hub_unreachable

    spec = f"open_clip:{name}"
    config = open_clip.get_pretrained_cfg(name, tag)
    if not config:
        known = open_clip.list_pretrained_tags_by_model(name)
        raise BackboneWeightsError(f"{spec}: unknown pretrained tag {tag!r}; open_clip knows "
                                   f"{', '.join(known) or 'none'} for {name}, or give a local weights file")
    repo, filename = os.path.split(config.get("hf_hub", ""))
    if not repo:
        return  # a plain URL download, left to open_clip
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"] if not filename else \
        [filename.rsplit(".", 1)[0] + ".safetensors", filename]
    why = None if cached(repo, names) else hub_unreachable()
    if why:
        raise BackboneWeightsError(f"{spec}: pretrained={tag!r} downloads its weights from the Hugging Face hub "
                                   f"({repo}), which {why}, and they are not in the local cache; give a local "
                                   "weights file (--pretrained path/to/weights.safetensors) or download them once "
                                   "where the hub is reachable")


def _explain_unloadable(name: str, path: str, error: Exception):
    """Raise BackboneWeightsError for a local weights file open_clip failed to load."""
    import open_clip

    from .base import BackboneWeightsError, check_state_dict

    spec = f"open_clip:{name}"
    try:
        state = open_clip.factory.load_state_dict(path)  # weights_only: nothing is unpickled beyond tensors
    except Exception as read_error:
        raise BackboneWeightsError(f"{spec}: {path} is not a checkpoint open_clip can read "
                                   f"({' '.join(str(read_error).split())[:200]})") from None
    check_state_dict(spec, path, state, open_clip.create_model(name, device="cpu").state_dict())
    raise BackboneWeightsError(f"{spec}: {path} could not be loaded: {' '.join(str(error).split())[:300]}") from None


def _source(pretrained: str | None) -> str | None:
    """A local file as an absolute path (so saved adapters find it from any directory); a tag as is."""
    return str(Path(pretrained).resolve()) if pretrained and Path(pretrained).is_file() else pretrained


def tiny_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@BACKBONES.register("tiny")
def load_tiny(name: str = "tiny-clip", *, pretrained: str | None = None, **kwargs) -> OpenClipBackbone:
    """A small open_clip CLIP from a config shipped in the package: same code path as the real ones."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from open_clip.tokenizer import SimpleTokenizer

    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        import difflib

        from ..core.registry import RegistryError

        close = difflib.get_close_matches(name, tiny_configs(), n=1)
        hint = f" Did you mean 'tiny:{close[0]}'?" if close else ""
        raise RegistryError(f"unknown tiny backbone 'tiny:{name}'.{hint} Shipped: "
                            f"{', '.join('tiny:' + c for c in tiny_configs())} ('tiny' alone is tiny:tiny-clip)")
    cfg = json.loads(path.read_text())
    with torch.random.fork_rng(devices=[]):  # seeded, reproducible weights; the caller's RNG is left alone
        torch.manual_seed(cfg.get("seed", 0))
        model = CLIP(
            embed_dim=cfg["embed_dim"],  # extra config keys ("weights", "seed") are not CLIP's
            vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
            text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
        )
    # A config may name shipped weights (backbones/weights/, e.g. tiny:synthetic, made by
    # `vl-adapters pretrain-backbone`); pretrained="" asks for the seeded initialisation instead.
    from .pretrain import load_weights, shipped_weights

    weights = shipped_weights(cfg) if pretrained is None else (pretrained or None)
    if weights is not None:
        load_weights(model, weights, spec=f"tiny:{name}")
    tokenizer = SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    backbone = OpenClipBackbone(spec=f"tiny:{name}", model=model, tokenizer=tokenizer, **kwargs)
    backbone.pretrained = _source(pretrained)  # seeded: reproducible whatever the source
    return backbone
