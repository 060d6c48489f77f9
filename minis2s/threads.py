"""How many BLAS threads a command runs with: ``--threads N|auto``.

NumPy's OpenBLAS threads busy-wait for work between calls. Alone on the machine a second thread
speeds a training step up a little; beside another busy process it slows the step down badly,
because the two threads and the other process take turns on the cores (docs/performance.md has
the measured table). So ``auto`` looks before it leaps:

1. the cores this process may run on (``os.sched_getaffinity``);
2. how many of them are idle right now: the busy time of those cores over a short window
   (``/proc/stat``, 0.1 s), or the 1-minute load average where ``/proc`` is missing;
3. the model: below ``SMALL_HIDDEN`` hidden units the matrices are too small for a second thread
   to pay (the threads' hand-over costs more than the split work saves), so one thread.

``auto`` = min(idle cores, allowed cores), at least 1, and 1 for small models. The choice is set
through ``grad.backend.set_num_threads`` (threadpoolctl) and printed by the command.

One rank of a data-parallel run (``mpiexec -n N``, docs/distributed.md) takes under ``auto`` its
share of the node instead: allowed cores / ranks on the node, at least 1.
"""
from __future__ import annotations

import math
import os
import time

SMALL_HIDDEN = 64
WINDOW_S = 0.1


def allowed_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times(cpus) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over the given CPUs, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]        # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return busy, total


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def idle_cores(window: float = WINDOW_S) -> float:
    """How many of the allowed cores other processes leave idle, measured over ``window``
    seconds (this process's own time in the window is not counted as busy)."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    first, own0, t0 = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    if first is None:
        try:
            return max(0.0, len(cpus) - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(len(cpus))
    time.sleep(window)
    second, own1, t1 = _cpu_times(cpus), _own_cpu_seconds(), time.monotonic()
    d_busy, d_total = second[0] - first[0], second[1] - first[1]
    if d_total <= 0:
        return float(len(cpus))
    busy_cores = d_busy / d_total * len(cpus) - (own1 - own0) / max(t1 - t0, 1e-9)
    return min(float(len(cpus)), max(0.0, len(cpus) - busy_cores))


def choose_threads(spec: str | int, hidden_size: int | None = None,
                   local_ranks: int = 1) -> tuple[int, str]:
    """``(threads, reason)`` for ``--threads spec`` ("auto" or a positive count). One rank of
    ``local_ranks`` > 1 data-parallel ranks on this node takes, under ``auto``, its share of the
    cores: cores / ranks, at least 1 (the ranks are the busy processes; measuring idle cores
    while they start would only see each other)."""
    if spec != "auto":
        n = int(spec)
        return n, "--threads"
    cores = allowed_cores()
    if local_ranks > 1:
        n = max(1, cores // local_ranks)
        return n, f"auto: {cores} cores / {local_ranks} ranks on this node"
    if hidden_size is not None and hidden_size < SMALL_HIDDEN:
        return 1, f"auto: hidden size {hidden_size} < {SMALL_HIDDEN}, a second thread gains little"
    idle = idle_cores()
    n = max(1, min(cores, math.floor(idle + 0.3)))
    return n, f"auto: {idle:.1f} of {cores} cores idle"


def apply_threads(spec: str | int, hidden_size: int | None = None, local_ranks: int = 1) -> dict:
    """Choose and set the BLAS thread count; returns what to print and to log: ``{"threads":
    requested, "blas_threads": what the BLAS reports now, "reason": ..., "header": line}``."""
    from grad import backend
    n, reason = choose_threads(spec, hidden_size, local_ranks)
    backend.set_num_threads(n)
    reported = backend.get_num_threads()
    word = "thread" if reported == 1 else "threads"
    return {"threads": n, "blas_threads": reported, "threads_reason": reason,
            "header": f"{reported} BLAS {word} ({reason})"}


def threads_arg(text: str):
    """argparse type of ``--threads``: ``auto`` or a positive integer."""
    import argparse
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return n
