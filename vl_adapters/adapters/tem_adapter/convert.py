"""Load the official Tem-Adapter checkpoints (XLiu443/Tem-adapter) into official_compat mode.

The authors save each aligner with torch.save as {"epoch", "state_dict", "optimizer", "model_kwargs"}
(a bare state dict is accepted too). Files are read with torch.load(weights_only=True), so nothing is
unpickled beyond tensors and plain containers. Every key of the official state dicts is mapped or
checked; any key left over, missing or of the wrong shape raises OfficialCheckpointError.

    vl-adapters convert-tem-adapter --temporal tempaligner_49.pt --semantic semanticaligner_49.pt --out DIR
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from .modules import sinusoid_positions


class OfficialCheckpointError(ValueError):
    """An official checkpoint whose keys or shapes do not match the official modules."""


# (official key pattern, our key template relative to the adapter); None: checked, not loaded.
TEMPORAL_KEYS = [
    (r"positional_encoding\.pe", None),
    (r"transformer_encoder\.(.+)", r"aligner.encoder.\1"),
    (r"transformer_decoder\.(.+)", r"aligner.decoder.\1"),
]
SEMANTIC_KEYS = [
    (r"gamma", "aligner.gate"),
    (r"context_decoder\.memory_proj\.(.+)", r"aligner.memory_proj.\1"),
    (r"context_decoder\.text_proj\.(.+)", r"aligner.text_proj.\1"),
    (r"context_decoder\.decoder\.(\d+)\.(.+)", r"aligner.layers.\1.\2"),
    (r"context_decoder\.out_proj\.(.+)", r"aligner.out_proj.\1"),
]


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The module state dict inside an official checkpoint file (weights only, 'module.' prefixes removed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official Tem-Adapter checkpoint {str(path)!r} does not exist")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise OfficialCheckpointError(
            f"{path}: expected a state dict of tensors or a dict with a 'state_dict' entry, got {type(loaded).__name__}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def map_keys(official: dict[str, Tensor], rules, *, which: str) -> dict[str, Tensor]:
    """Rename every official key by the first rule that matches it; refuse any key no rule covers."""
    mapped, unmapped = {}, []
    for key, value in official.items():
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match:
                if template is None:
                    _check_positions(key, value)
                else:
                    mapped[match.expand(template)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise OfficialCheckpointError(f"official {which} checkpoint: no mapping for key(s) {unmapped}")
    return mapped


def _check_positions(key: str, value: Tensor) -> None:
    """The official positional table is a fixed buffer; ours is computed, so it must agree with it."""
    if value.ndim != 3 or value.shape[1] != 1:
        raise OfficialCheckpointError(f"official {key}: expected shape [max_len, 1, D], got {list(value.shape)}")
    expected = sinusoid_positions(value.shape[0], value.shape[2])
    if not torch.allclose(value[:, 0].float(), expected, atol=1e-4):
        raise OfficialCheckpointError(f"official {key} is not the sinusoidal table this implementation computes")


def load_into(module: nn.Module, mapped: dict[str, Tensor], *, which: str) -> None:
    """Strict load with messages that name the keys: missing, unexpected and wrongly shaped ones."""
    own = module.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    shapes = [f"{k}: {list(mapped[k].shape)} vs ours {list(own[k].shape)}"
              for k in sorted(set(own) & set(mapped)) if mapped[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise OfficialCheckpointError(
            f"official {which} checkpoint does not fit {type(module).__name__} (is official_compat set and the "
            f"backbone 512-d?): missing {missing}, unexpected {unexpected}, shape mismatches {shapes}"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)


def load_official(model, *, temporal: str | Path | dict | None = None, semantic: str | Path | dict | None = None) -> None:
    """Load official checkpoints (paths or state dicts) into a wrapped model's official_compat aligners."""
    by_name = {adapter.name: adapter for adapter in model.adapters}
    for which, source, name, rules in (("TempAligner", temporal, "tem_temporal_aligner", TEMPORAL_KEYS),
                                       ("SemanticAligner", semantic, "tem_semantic_aligner", SEMANTIC_KEYS)):
        if source is None:
            continue
        adapter = by_name.get(name)
        if adapter is None or not adapter.config.official_compat:
            raise OfficialCheckpointError(
                f"official {which} weights need a model with {name} (or tem_adapter) in official_compat mode"
            )
        state = source if isinstance(source, dict) else read_official_checkpoint(source)
        load_into(adapter, map_keys(state, rules, which=which), which=which)


def convert_official(*, temporal: str | Path, semantic: str | Path, out: str | Path,
                     backbone="open_clip:ViT-B-32", task: dict | None = None):
    """Build an official_compat tem_adapter on `backbone` (a spec, loaded as architecture only with no
    weights downloaded, or a loaded Backbone), load the two official checkpoints and write
    adapters.safetensors + adapters.json to `out`."""
    import vl_adapters as vla

    frozen = vla.load_backbone(backbone, pretrained=None, device="cpu") if isinstance(backbone, str) else backbone
    task = task or {"type": "multiple_choice", "loss": "hinge", "template": "{answer}"}
    model = vla.wrap(frozen, [{"type": "tem_adapter", "official_compat": True, "template": "answer"}], task=task)
    load_official(model, temporal=temporal, semantic=semantic)
    model.save_adapters(out)
    return model


def _cmd_convert(args: argparse.Namespace) -> int:
    convert_official(temporal=args.temporal, semantic=args.semantic, out=args.out, backbone=args.backbone)
    print(f"wrote {Path(args.out) / 'adapters.safetensors'} and adapters.json (tem_adapter, official_compat); "
          f"load with vla.load_adapters({str(args.out)!r}, pretrained='openai')")
    return 0


def register(sub) -> None:
    parser = sub.add_parser("convert-tem-adapter",
                            help="convert the official Tem-Adapter TempAligner/SemanticAligner checkpoints")
    parser.add_argument("--temporal", required=True, help="official TempAligner checkpoint (torch.save file)")
    parser.add_argument("--semantic", required=True, help="official SemanticAligner checkpoint (torch.save file)")
    parser.add_argument("--out", required=True, help="output directory for adapters.safetensors + adapters.json")
    parser.add_argument("--backbone", default="open_clip:ViT-B-32",
                        help="backbone spec recorded with the adapters (the official one is CLIP ViT-B/32)")
    parser.set_defaults(func=_cmd_convert)

