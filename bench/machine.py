"""The machine a benchmark ran on, described the same way by every benchmark.

``machine_info()``: CPU model (``/proc/cpuinfo``'s model name, e.g. ``AMD EPYC``; ``platform``
only reports the architecture there), cores, RAM, GPU and OS. ``load_average()``: taken next to
each measurement, since other work on a shared machine slows every figure.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a ``/proc`` file, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name; the architecture (``x86_64``) where ``/proc/cpuinfo`` has none."""
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """What ``device`` (``cpu`` or ``cuda``) is: the GPU's name or the CPU model."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    return cpu_model()


def load_average() -> float:
    """The 1-minute load average; above the core count every figure slows."""
    return round(os.getloadavg()[0], 2)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM (GiB), GPU (None without CUDA) and OS of this machine."""
    import torch

    mem_kib = _proc_field("/proc/meminfo", "MemTotal:")
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "ram_gib": round(int(mem_kib.split()[0]) / 1024**2, 1) if mem_kib else None,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
