"""What a training run costs: time per optimiser step and peak memory, on CUDA or the CPU.

Peak memory is the device's high-water mark since `reset_peak_memory`: CUDA's allocator statistics on a
GPU; on a CPU the process's peak resident set size (Linux `VmHWM`), which the kernel lets a process reset
(`/proc/self/clear_refs`), so a worker that runs several jobs reports each job's own peak. Where that
reset is not available the CPU figure is the process's peak so far, said by `peak_memory_note`.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new high-water mark; False when only the process's lifetime peak can be read."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")  # 5: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def peak_memory_note(device: torch.device, reset: bool) -> str:
    if device.type == "cuda":
        return "CUDA max_memory_allocated"
    return "process peak RSS" + ("" if reset else " (lifetime of the process: it could not be reset)")


class StepClock:
    """Wall and CPU seconds spent in optimiser steps (data loading included, evaluation excluded)."""

    def __init__(self, device: torch.device, seconds: float = 0.0, cpu_seconds: float = 0.0, steps: int = 0) -> None:
        self.device, self.seconds, self.cpu_seconds, self.steps = device, seconds, cpu_seconds, steps
        self._wall = self._cpu = None

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self, steps: int = 1) -> None:
        """Close the interval opened by start(), counting `steps` optimiser steps in it."""
        if self._wall is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self._wall
        self.cpu_seconds += time.process_time() - self._cpu
        self.steps += steps
        self._wall = self._cpu = None

    def state(self) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "steps": self.steps}
