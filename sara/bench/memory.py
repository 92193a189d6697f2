"""Peak memory and device synchronisation for the benchmarks.

Peak extra memory is the high-water mark above the memory held at ``start()``: resident
set size on CPU (``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``),
``torch.cuda.max_memory_allocated`` on CUDA. Run each measured case in a fresh process so
that one case's allocations cannot hide in the next one's peak.
"""

from __future__ import annotations

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak bytes allocated above the level at ``start()``."""

    def __init__(self, device: str):
        self.device = device

    def start(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _status_mib("VmRSS") * 2**20
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # resets VmHWM to the current RSS

    def extra_bytes(self) -> float:
        if self.device.startswith("cuda"):
            return torch.cuda.max_memory_allocated() - self.base
        return _status_mib("VmHWM") * 2**20 - self.base
