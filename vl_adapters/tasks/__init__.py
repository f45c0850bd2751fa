"""Task heads; importing this package registers them."""

from . import multiple_choice, open_qa, retrieval  # noqa: F401
from .base import TaskHead, TaskOutput, build_task, register_task

__all__ = ["TaskHead", "TaskOutput", "build_task", "register_task"]
