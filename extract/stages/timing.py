"""Per-video wall and CPU seconds of a stage call (the ``time_<name>_s`` / ``cpu_<name>_s`` columns).

CPU seconds count the calling process and its child processes (the decode children, which do
the FFmpeg work), read from ``/proc``: user + system time of the process, of the children it
has waited for, and of every live descendant. A call's CPU is the difference before and after;
a descendant that exits during the call without being waited for is lost (none of ours does).
Where ``/proc`` is missing, the process's own CPU time (``time.process_time``) stands in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu_ticks(pid: int | str, with_waited: bool) -> int:
    """utime + stime (+ cutime + cstime) of ``pid`` in clock ticks; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 is fields[0]
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if with_waited:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (16, 17)
    return ticks


def _children(pid: int | str) -> list[str]:
    out: list[str] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend((task / "children").read_text().split())
        except OSError:
            continue
    return out


def process_tree_cpu_s() -> float:
    """CPU seconds of this process, its waited-for children and its live descendants."""
    if not Path("/proc/self/stat").exists():
        return time.process_time()
    ticks = _stat_cpu_ticks("self", with_waited=True)
    todo = _children(os.getpid())
    seen: set[str] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        # A live child's waited-for children are its own descendants' past: count them too.
        ticks += _stat_cpu_ticks(pid, with_waited=True)
        todo.extend(_children(pid))
    return ticks / _TICKS


def timed_call(name: str, stage: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
               batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``stage(batch)`` with ``time_<name>_s`` and ``cpu_<name>_s`` added to every row: the
    call's wall and CPU seconds divided by its rows."""
    start, cpu = time.perf_counter(), process_tree_cpu_s()
    out: dict[str, Any] = stage(batch)
    n = len(next(iter(out.values()))) if out else 0
    out[f"time_{name}_s"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
    out[f"cpu_{name}_s"] = np.full(n, max(process_tree_cpu_s() - cpu, 0.0) / max(n, 1))
    return out
