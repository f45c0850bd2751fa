"""Built-in adapters; importing this package registers them."""

from . import (
    fine_grained_alignment,  # noqa: F401
    lora,  # noqa: F401
    multi_level_alignment,  # noqa: F401
    salient_frames,  # noqa: F401
    single_frame,  # noqa: F401
    st_adapter,  # noqa: F401
    tem_adapter,  # noqa: F401
    temporal_transformer,  # noqa: F401
    token_masking,  # noqa: F401
    trajectory_word,  # noqa: F401
    xclip,  # noqa: F401
)

try:  # needs the "graph" extra (networkx, torch-geometric)
    from . import finsta  # noqa: F401
except ModuleNotFoundError as missing:
    if missing.name not in ("networkx", "torch_geometric"):
        raise
