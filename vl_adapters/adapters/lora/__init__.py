from .adapter import Lora, target_pattern
from .config import LoraConfig
from .modules import LoraMultiheadAttention

__all__ = ["Lora", "LoraConfig", "LoraMultiheadAttention", "target_pattern"]
