"""Built-in adapters; importing this package registers them."""

from . import temporal_transformer  # noqa: F401
