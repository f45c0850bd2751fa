"""Built-in adapters; importing this package registers them."""

from . import (
    fine_grained_alignment,  # noqa: F401
    tem_adapter,  # noqa: F401
    temporal_transformer,  # noqa: F401
    trajectory_word,  # noqa: F401
)
