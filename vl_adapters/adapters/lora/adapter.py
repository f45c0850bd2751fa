from __future__ import annotations

import re

from torch import nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.config import ConfigError
from .config import TARGETS, TOWERS, LoraConfig
from .modules import LoraMultiheadAttention

# Per backbone family: the tower prefixes and the per-block layer names LoRA targets (regex, full match).
_TOWER_PATTERNS = {
    "open_clip": {"vision": r"visual\.transformer\.resblocks\.\d+", "text": r"transformer\.resblocks\.\d+"},
    "hf": {"vision": r"vision_model\.encoder\.layers\.\d+", "text": r"text_model\.encoder\.layers\.\d+"},
}
_LAYER_PATTERNS = {
    # open_clip 3.x blocks use nn.MultiheadAttention, which reads its in_proj/out_proj weights directly
    # rather than calling a Linear's forward; LoRA goes on the attention module (LoraMultiheadAttention).
    "open_clip": {"attention": r"attn", "mlp": r"mlp\.(c_fc|c_proj)"},
    "hf": {"attention": r"self_attn\.(q_proj|k_proj|v_proj|out_proj)", "mlp": r"mlp\.(fc1|fc2)"},
}


def target_pattern(family: str, towers: str, targets: str) -> str:
    """The regex (peft `target_modules`) naming the layers LoRA wraps in `backbone.model`."""
    if towers not in TOWERS:
        raise ConfigError(f"lora.towers must be one of {TOWERS}, got {towers!r}")
    if targets not in TARGETS:
        raise ConfigError(f"lora.targets must be one of {TARGETS}, got {targets!r}")
    tower_names = ("vision", "text") if towers == "both" else (towers,)
    layer_names = ("attention", "mlp") if targets == "all" else (targets,)
    prefix = "|".join(_TOWER_PATTERNS[family][t] for t in tower_names)
    layers = "|".join(_LAYER_PATTERNS[family][t] for t in layer_names)
    return rf"({prefix})\.({layers})"


@register_adapter("lora")
class Lora(Adapter):
    """LoRA inside the frozen backbone through peft. attach() injects the low-rank layers into
    backbone.model in place; the base weights stay frozen and untouched (lora_B starts at zero, so the
    model starts as the backbone). The lora_A/lora_B modules are also registered here, so they are
    saved in adapters.safetensors with the other adapters and never drag the base weights along."""

    config_class = LoraConfig
    stage = "backbone"
    families = ("open_clip", "hf")

    @property
    def changes_text_tower(self) -> bool:
        return self.config.towers != "vision"

    def __init__(self, config: LoraConfig, dims) -> None:
        super().__init__(config, dims)  # LoraConfig has validated rank, towers and targets
        self.lora = nn.ModuleDict()
        self._model: list[nn.Module] = []  # a plain list, so backbone.model is not registered as a submodule
        self._adapter_name = ""

    def attach(self, backbone) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        if any(isinstance(m, (BaseTunerLayer, LoraMultiheadAttention)) for m in backbone.model.modules()):
            raise RuntimeError(
                "lora: this backbone already carries peft layers from another wrapped model; load a fresh "
                "backbone, or call detach_backbone_adapters() on the other model first"
            )
        config = self.config
        family = backbone.family
        model = backbone.model
        self._model[:] = [model]
        self._adapter_name = "vla_lora"
        mha_targets = config.targets in ("attention", "all") and family == "open_clip"
        if mha_targets:
            pattern = re.compile(target_pattern(family, config.towers, "attention"))
            for name, module in list(model.named_modules()):
                if pattern.fullmatch(name) and isinstance(module, nn.MultiheadAttention):
                    wrapper = LoraMultiheadAttention(base=module, rank=config.rank, alpha=config.alpha)
                    parent_name, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent_name), child, wrapper.to(backbone.device))
                    key = name.replace(".", "__")
                    for part in ("lora_in_A", "lora_in_B", "lora_out_A", "lora_out_B"):
                        self.lora[f"{key}__{part}"] = getattr(wrapper, part)
        peft_targets = "mlp" if mha_targets and config.targets == "all" else config.targets
        if not (mha_targets and peft_targets == "attention"):
            peft_config = PeftLoraConfig(
                r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                target_modules=target_pattern(family, config.towers, peft_targets),
            )
            inject_adapter_in_model(peft_config, model, adapter_name=self._adapter_name)
        for name, module in model.named_modules():
            if isinstance(module, BaseTunerLayer):
                key = name.replace(".", "__")
                for part in ("lora_A", "lora_B"):
                    self.lora[f"{key}__{part}"] = getattr(module, part)[self._adapter_name]
        if not len(self.lora):
            raise RuntimeError(f"lora: no layer of backbone {backbone.spec!r} matched the targets of {config}")
        # Adapters stay fp32 (peft casts the input to the LoRA weights' dtype); only they train.
        self.lora.float().requires_grad_(True)
        for name, param in model.named_parameters():
            if ".lora_" not in name and not any(param is p for p in self.lora.parameters()):
                param.requires_grad_(False)

    def _unwrap(self, merge: bool) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not self._model:
            return
        model = self._model[0]
        wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, (BaseTunerLayer, LoraMultiheadAttention))]
        for name, module in wrapped:
            if isinstance(module, LoraMultiheadAttention):
                base = module.merged() if merge else module.base_layer
            else:
                if merge:
                    module.merge(adapter_names=[self._adapter_name])
                base = module.get_base_layer()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, base)
        if hasattr(model, "peft_config"):  # set by inject_adapter_in_model
            del model.peft_config
        self.lora = nn.ModuleDict()
        self._model.clear()

    def detach(self) -> None:
        self._unwrap(merge=False)

    def merge(self) -> bool:
        self._unwrap(merge=True)
        return True

    def forward(self, video, text, ctx) -> AdapterOutput:
        # Runs inside the backbone; nothing to do after it.
        return AdapterOutput(video=video, text=text)
