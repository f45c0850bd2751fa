"""vl-adapters: plug-and-play adapters for frozen image-pretrained video-language backbones."""

__version__ = "0.1.0"

from . import adapters as _builtin_adapters  # noqa: E402,F401  (registers the built-in adapters)
from . import tasks as _builtin_tasks  # noqa: E402,F401
from .backbones import Backbone, load_backbone  # noqa: E402
from .backbones.base import BackboneWeightsError  # noqa: E402
from .core.adapter import (  # noqa: E402
    Adapter,
    AdapterContext,
    AdapterOutput,
    BackboneDims,
    build_adapter,
    list_adapters,
    register_adapter,
)
from .core.config import AdapterConfig, ConfigError, TaskConfig  # noqa: E402
from .core.features import FeatureShapeError, TextFeatures, VideoFeatures  # noqa: E402
from .core.hub import from_pretrained  # noqa: E402
from .core.model import CompositionError, VideoLanguageModel, load_adapters, wrap  # noqa: E402
from .core.registry import RegistryError  # noqa: E402
from .data import samplers as _builtin_samplers  # noqa: E402,F401  (registers the frame samplers)

__all__ = [
    "Adapter", "AdapterConfig", "AdapterContext", "AdapterOutput", "Backbone", "BackboneDims", "BackboneWeightsError",
    "CompositionError", "ConfigError", "FeatureShapeError", "RegistryError", "TaskConfig",
    "TextFeatures", "VideoFeatures", "VideoLanguageModel", "__version__", "build_adapter", "from_pretrained",
    "list_adapters", "load_adapters", "load_backbone", "register_adapter", "wrap",
]
