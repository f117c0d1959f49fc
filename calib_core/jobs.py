"""Background jobs for long work (pruning, self-generation) that must outlive a page view.

One worker thread per device runs its queue in order, so two app sessions never prune on the same
device at once: the second job waits, visibly 'queued'. Jobs keep every event they emit, so a page
that reopens can redraw the whole history. Process-wide: all sessions share one manager."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .errors import CalibLabError, PruningCancelled


@dataclass
class Job:
    id: int
    label: str
    device: str
    status: str = "queued"  # queued | running | finished | failed | cancelled
    events: list = field(default_factory=list)
    result: object = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def emit(self, event) -> None:
        self.events.append(event)

    def events_of(self, kind: str) -> list:
        """The events of one kind ('block', 'module', 'pipeline', 'generation', ...), in order."""
        return [e for e in list(self.events) if getattr(e, "kind", "") == kind]

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "cancelled")


class JobManager:
    """`keep_finished`: how many ended jobs (with all their events) stay in memory; older ones are
    dropped, so an app left running for weeks does not grow without bound. Their runs stay in the
    run store."""

    def __init__(self, keep_finished: int = 50):
        self.keep_finished = keep_finished
        self._jobs: dict[int, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, label: str, work: Callable[[Job], object], device: str = "cpu") -> Job:
        """Queue `work(job)`; it should pass job.emit as its event callback and job.cancel_event as
        its cancel token."""
        with self._lock:
            job = Job(next(self._ids), label, device)
            self._jobs[job.id] = job
            if device not in self._queues:
                self._queues[device] = queue.Queue()
                threading.Thread(target=self._worker, args=(device,), daemon=True, name=f"jobs-{device}").start()
            self._queues[device].put((job, work))
        return job

    def _worker(self, device: str) -> None:
        while True:
            job, work = self._queues[device].get()
            if job.cancel_event.is_set():
                job.status, job.ended = "cancelled", time.time()
                continue
            job.status, job.started = "running", time.time()
            try:
                job.result = work(job)
                job.status = "finished"
            except PruningCancelled as exc:
                job.status, job.error = "cancelled", str(exc)
            except CalibLabError as exc:
                job.status, job.error = "failed", str(exc)
            except Exception as exc:  # keep the worker alive; show the user what broke
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            job.ended = time.time()
            self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            ended = [j for j in self._jobs.values() if j.done]
            for job in sorted(ended, key=lambda j: j.ended or 0)[: max(len(ended) - self.keep_finished, 0)]:
                del self._jobs[job.id]

    def get(self, job_id: int) -> Job | None:
        """The job, or None when it ended long ago and was dropped (see keep_finished)."""
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def position(self, job: Job) -> int:
        """0 when running; otherwise how many jobs on its device are ahead of it."""
        ahead = [j for j in self._jobs.values() if j.device == job.device and not j.done and j.id < job.id]
        return len(ahead)


_MANAGER = JobManager()


def manager() -> JobManager:
    return _MANAGER
