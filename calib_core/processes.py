"""Which process wrote something, and whether it still runs: a pid plus the process start time, so a
pid the system has since given to another process does not pass for the original writer."""

from __future__ import annotations

import psutil


def process_start(pid: int | None = None) -> float | None:
    """Start time (seconds since the epoch) of `pid` (default: this process), None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_gone(pid: int | None, started: float | None) -> bool:
    """True when the process is dead, a zombie, or another process now holds its pid (its start time
    differs by over a second). `started` None: only the pid is known (older records)."""
    if not pid:
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return started is not None and abs(process.create_time() - started) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's live process
        return False
