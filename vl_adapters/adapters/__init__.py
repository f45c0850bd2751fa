"""The built-in adapters, by name. Each module is imported when its adapter is first used (vla.wrap,
build_adapter, `vl-adapters list -v`), so `import vl_adapters` never pays for an adapter's dependencies
(finsta's torch_geometric and networkx). Importing a module registers its adapters as usual."""

from ..core.registry import ADAPTERS

# adapter name -> (module under vl_adapters.adapters, optional packages that module needs)
BUILTIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "fine_grained_alignment": ("fine_grained_alignment", ()),
    "finsta": ("finsta", ("networkx", "torch_geometric")),
    "lora": ("lora", ()),
    "multi_level_alignment": ("multi_level_alignment", ()),
    "salient_frame_filter": ("salient_frames", ()),
    "salient_frame_scorer": ("salient_frames", ()),
    "salient_frames": ("salient_frames", ()),
    "single_frame": ("single_frame", ()),
    "st_adapter": ("st_adapter", ()),
    "tem_adapter": ("tem_adapter", ()),
    "tem_temporal_aligner": ("tem_adapter", ()),
    "tem_semantic_aligner": ("tem_adapter", ()),
    "temporal_transformer": ("temporal_transformer", ()),
    "token_masking": ("token_masking", ()),
    "trajectory_word": ("trajectory_word", ()),
    "xclip": ("xclip", ()),
}

for _name, (_module, _requires) in BUILTIN.items():
    ADAPTERS.register_lazy(_name, f"{__name__}.{_module}", requires=_requires)
