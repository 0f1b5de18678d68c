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


class TreeCpu:
    """CPU-seconds of this process and every process under it, including those that exit.

    ``getrusage(RUSAGE_CHILDREN)`` counts a process only once its parent has waited for it,
    and Ray's workers are often reaped by nobody in our chain (their raylet is killed first),
    so it under-counts a Ray run by tens of CPU-seconds. Instead a thread reads ``/proc`` every
    ``interval_s``: each descendant's own user + system time (its children are counted as
    themselves), keeping the last value seen per process; a process that ends between two
    reads loses at most ``interval_s`` of CPU. ``total()``: the CPU spent since ``start()``
    (what this process had spent before is left out); ``stop()`` ends the thread.
    """

    def __init__(self, interval_s: float = 0.2):
        import threading

        self.interval_s = interval_s
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.last: dict[tuple[int, str], int] = {}  # (pid, start time) -> utime + stime ticks
        self.names: dict[tuple[int, str], str] = {}  # (pid, start time) -> command name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()
        self.baseline = 0

    def start(self) -> "TreeCpu":
        """Start counting; this process becomes the subreaper of its descendants (Linux
        ``PR_SET_CHILD_SUBREAPER``), so an orphan stays in its tree instead of moving to init."""
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        self._sample()
        self.baseline = sum(self.last.values())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def total(self) -> float:
        """CPU-seconds of the tree since ``start()``, up to now."""
        self._sample()
        with self._lock:
            return (sum(self.last.values()) - self.baseline) / self.ticks

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        parent: dict[int, int] = {}
        usage: dict[int, tuple[str, int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            pid = int(entry.name)
            parent[pid] = int(fields[1])
            usage[pid] = (fields[19], int(fields[11]) + int(fields[12]), stat[stat.index("(") + 1:stat.rindex(")")])
        root = os.getpid()
        with self._lock:
            for pid, (start, ticks, name) in usage.items():
                p, hops = pid, 0
                while p not in (root, 0, 1) and hops < 64:
                    p, hops = parent.get(p, 0), hops + 1
                if p == root:
                    self.last[(pid, start)] = max(ticks, self.last.get((pid, start), 0))
                    self.names[(pid, start)] = name

    def by_name(self) -> dict[str, float]:
        """CPU-seconds since ``start()`` per command name (``ray::models``, ``raylet``, ...), largest first."""
        out: dict[str, float] = {}
        with self._lock:
            for key, ticks in self.last.items():
                out[self.names.get(key, "?")] = out.get(self.names.get(key, "?"), 0.0) + ticks / self.ticks
            root = [k for k in self.last if k[0] == os.getpid()]
            for key in root:  # this process: only what it spent since start()
                out[self.names[key]] -= self.baseline / self.ticks
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
