"""Finsta: structural (scene-graph) spatio-temporal alignment, transferred into a frozen dual encoder."""

from .adapter import Finsta
from .config import FinstaConfig

__all__ = ["Finsta", "FinstaConfig"]
