"""How busy the rest of the machine was while we measured.

On a 2-core machine any other process steals from the server or the load
generator. :class:`CpuMeter` reads the machine's busy time from /proc/stat
and subtracts this run's own (this process plus its waited-for children:
servers, load generator, minting workers), leaving what others used.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> tuple[float, float]:
    """Busy and stolen CPU seconds, all cores, since boot."""
    with open("/proc/stat") as fh:
        fields = [int(value) for value in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq
    return busy / _TICKS, steal / _TICKS


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class CpuMeter:
    def __init__(self) -> None:
        self._start = time.monotonic()
        self._busy, self._steal = _machine_busy_seconds()
        self._own = _own_seconds()

    def others_share(self, running_children: float = 0.0) -> tuple[float, float]:
        """Share of all cores used by other processes, and stolen, so far.

        ``running_children`` is CPU time of our children still running (a
        server, the load generator), which ``os.times`` cannot see yet.
        """
        capacity = (time.monotonic() - self._start) * (os.cpu_count() or 1)
        busy, steal = _machine_busy_seconds()
        own = _own_seconds() - self._own + running_children
        others = (busy - self._busy) - own
        if capacity <= 0:
            return 0.0, 0.0
        return max(0.0, others / capacity), (steal - self._steal) / capacity

    def line(self) -> str:
        others, steal = self.others_share()
        text = f"other processes used {others:.0%} of the CPU"
        if steal >= 0.01:
            text += f", the hypervisor stole {steal:.0%}"
        if others >= 0.05:
            text += " -- figures are inflated; rerun on a quiet machine"
        return text


def _git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), *args]
    done = subprocess.run(  # noqa: S603 - a fixed command line
        command, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def revision(root: Path) -> str:
    """The commit measured, and whether the library had local changes."""
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "zt_middleware")
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"

    return head + (" + uncommitted changes in zt_middleware/" if dirty else "")
