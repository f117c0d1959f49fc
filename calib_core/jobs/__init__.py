"""Background jobs for long work (pruning, self-generation, similarity, sweeps), each in its own
worker process.

The app's server only starts workers and reads what they write, so a page that redraws, a garbage
collection in the server, or a server restart never slows or kills a running job. Every job is a
folder under `<data dir>/jobs/<id>/`:

- `task.pkl`: the work (a module-level function) and its arguments, written by the server;
- `status.json`: queued | running | finished | failed | cancelled, with pid and times, written
  atomically by the worker (or by a reader that finds the worker dead: then `failed`, with the last
  message the job emitted);
- `events.bin`: every event, appended as length-prefixed pickles, so any reader (a reload, a second
  tab, a restarted server) can redraw the whole history and read on from where it stopped;
- `result.pkl`: the return value; `cancel`: present once someone asked to stop.

One job per device at a time, in submission order: a worker waits until no older live job on its
device is pending, then holds the device's lock file while it works. The files are ours (a private
folder of the data dir), which is why pickle is safe here."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..files import atomic_write_bytes, atomic_write_json
from ..paths import data_dir
from ..processes import process_gone, process_start

ENDED = ("finished", "failed", "cancelled")
_FRAME = struct.Struct("<Q")
ALIVE_CHECK_SECONDS = 0.5  # how often a reader asks whether a pending job's worker still runs


def jobs_dir() -> Path:
    path = data_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Job:
    """A view of one job folder. Readers see the state as of their last access (every property reads
    the status file again, and new events on); the worker process also writes through it."""

    folder: Path
    id: int = 0
    label: str = ""
    device: str = "cpu"
    kind: str = ""
    created: float = 0.0
    _state: dict = field(default_factory=dict, repr=False)
    _events: list = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)
    _result: object = field(default=None, repr=False)
    _result_read: bool = field(default=False, repr=False)
    _alive_checked: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)  # set in the worker

    @classmethod
    def open(cls, folder: Path) -> "Job | None":
        try:
            state = json.loads((folder / "status.json").read_text())
        except (OSError, ValueError):
            return None  # a folder being created, or not a job
        job = cls(folder, state["id"], state["label"], state["device"], state.get("kind", ""), state["created"])
        job._state = state
        return job

    # --- reading -----------------------------------------------------------------------------------
    def _sync(self) -> dict:
        if self._state.get("status") in ENDED:
            return self._state
        self._read_state()
        if self._state["status"] not in ENDED and time.time() - self._alive_checked > ALIVE_CHECK_SECONDS:
            self._alive_checked = time.time()
            if process_gone(self._state.get("pid"), self._state.get("pid_started")):
                self._read_state()  # it may have ended just now
                if self._state["status"] not in ENDED:
                    self._mark_dead_worker()
        return self._state

    def _read_state(self) -> None:
        try:
            self._state = json.loads((self.folder / "status.json").read_text())
        except (OSError, ValueError):
            pass  # keep the last state read: the folder may be gone with the data dir

    @property
    def status(self) -> str:
        return self._sync()["status"]

    @property
    def done(self) -> bool:
        return self.status in ENDED

    error = property(lambda self: self._sync().get("error"), doc="The failure or cancel message, if any.")
    started = property(lambda self: self._sync().get("started"), doc="When the worker began the work.")
    ended = property(lambda self: self._sync().get("ended"))
    pid = property(lambda self: self._sync().get("pid"), doc="The worker process.")

    @property
    def result(self):
        if self.status != "finished":
            return None
        if not self._result_read:
            self._result = pickle.loads((self.folder / "result.pkl").read_bytes())
            self._result_read = True
        return self._result

    @property
    def events(self) -> list:
        """Every event so far; reads only the frames appended since the last call."""
        with self._lock:
            try:
                with open(self.folder / "events.bin", "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return list(self._events)
            position = 0
            while position + _FRAME.size <= len(data):
                (length,) = _FRAME.unpack_from(data, position)
                end = position + _FRAME.size + length
                if end > len(data):
                    break  # a frame still being written
                self._events.append(pickle.loads(data[position + _FRAME.size:end]))
                position = end
            self._offset += position
            return list(self._events)

    def events_of(self, kind: str) -> list:
        """The events of one kind ('block', 'module', 'pipeline', 'generation', ...), in order."""
        return [e for e in self.events if getattr(e, "kind", "") == kind]

    def last_message(self) -> str | None:
        messages = [getattr(e, "message", None) for e in self.events]
        return next((m for m in reversed(messages) if m), None)

    # --- acting ------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop; a queued job ends without starting."""
        if not self.done:
            (self.folder / "cancel").touch()

    @property
    def cancel_requested(self) -> bool:
        return (self.folder / "cancel").exists()

    # --- writing (the worker process) --------------------------------------------------------------
    def emit(self, event) -> None:
        payload = pickle.dumps(event)
        with open(self.folder / "events.bin", "ab") as handle:
            handle.write(_FRAME.pack(len(payload)) + payload)

    def write_state(self, **changes) -> None:
        self._read_state()
        self._state = {**self._state, **changes}
        atomic_write_json(self.folder / "status.json", self._state)

    def write_result(self, result) -> None:
        atomic_write_bytes(self.folder / "result.pkl", pickle.dumps(result))

    def _mark_dead_worker(self) -> None:
        """The worker is gone while the job was pending: record it as failed, with its last words."""
        last = self.last_message()
        self.write_state(status="failed", ended=time.time(),
                         error="The job's worker process ended unexpectedly (killed, or out of memory)."
                               + (f" Its last message: {last}" if last else ""))


class JobManager:
    """Starts workers and finds jobs in `folder` (default `<data dir>/jobs`). Any number of managers,
    in any processes, see the same jobs. `keep_finished`: how many ended jobs keep their folders;
    older ones are deleted (their runs stay in the run store)."""

    def __init__(self, folder: str | os.PathLike | None = None, keep_finished: int = 50):
        self.folder = Path(folder) if folder else jobs_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_finished = keep_finished
        self._open: dict[int, Job] = {}  # views kept so that events are read incrementally
        self._workers: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def submit(self, label: str, work: Callable, *args, device: str = "auto", kind: str = "") -> Job:
        """Run `work(job, *args)` in a new worker process. `work` must be a module-level function
        (it is pickled by name); it should pass job.emit as its event callback and job.cancel_event
        as its cancel token. `device` is the device the work computes on: its physical device
        (devices.device_key, checked here, before any work) is the queue the job waits in."""
        from ..devices import device_key

        device = device_key(device)
        with self._lock:
            folder = self._new_folder()
            (folder / "task.pkl").write_bytes(pickle.dumps((work, args)))
            with open(folder / "worker.log", "ab") as log:  # a new session: a server restart does not reach it
                worker = subprocess.Popen([sys.executable, "-m", "calib_core.jobs.worker", str(folder)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, env=_worker_environment())
            # Written once the pid is known (the worker waits for it), so no reader ever sees a job
            # without the process that owns it.
            atomic_write_json(folder / "status.json", dict(
                id=int(folder.name), label=label, device=device, kind=kind, created=time.time(), status="queued",
                pid=worker.pid, pid_started=process_start(worker.pid)))
            self._workers[int(folder.name)] = worker
            job = self._open[int(folder.name)] = Job.open(folder)
        self._forget_old()
        return job

    def _new_folder(self) -> Path:
        ids = [int(p.name) for p in self.folder.iterdir() if p.name.isdigit()]
        number = max(ids, default=0) + 1
        while True:
            try:
                folder = self.folder / str(number)
                folder.mkdir()  # atomic: two servers never share an id
                return folder
            except FileExistsError:
                number += 1

    def get(self, job_id: int | None) -> Job | None:
        """The job, or None when it is unknown or its folder was dropped (see keep_finished)."""
        if not job_id:
            return None
        job = self._open.get(job_id) or Job.open(self.folder / str(job_id))
        if job is None:
            return None
        self._open[job.id] = job
        self._reap(job)
        return job

    def jobs(self) -> list[Job]:
        """Every job with a folder, oldest first."""
        ids = sorted(int(p.name) for p in self.folder.iterdir() if p.name.isdigit())
        return [job for job in map(self.get, ids) if job is not None]

    def active(self) -> list[Job]:
        return [job for job in self.jobs() if not job.done]

    def latest(self, kind: str) -> Job | None:
        """The newest job of `kind` still queued or running (what a reloaded page shows)."""
        return next((job for job in reversed(self.active()) if job.kind == kind), None)

    def newest(self, kind: str) -> Job | None:
        """The newest job of `kind` whatever its status (ended jobs while their folders are kept)."""
        return next((job for job in reversed(self.jobs()) if job.kind == kind), None)

    def position(self, job: Job) -> int:
        """0 when running; otherwise how many jobs on its device are ahead of it."""
        return len([j for j in self.active() if j.device == job.device and j.id < job.id])

    def _reap(self, job: Job) -> None:
        """Collect the exit status of a worker this manager started, so it leaves no zombie."""
        worker = self._workers.get(job.id)
        if worker is not None and worker.poll() is not None:
            del self._workers[job.id]

    def _forget_old(self) -> None:
        ended = [job for job in self.jobs() if job.done]
        for job in ended[: max(len(ended) - self.keep_finished, 0)]:
            shutil.rmtree(job.folder, ignore_errors=True)
            self._open.pop(job.id, None)


def _worker_environment() -> dict:
    """The server's environment, with the project importable whatever the worker's cwd."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))


_MANAGERS: dict[Path, JobManager] = {}


def manager() -> JobManager:
    """The manager of the current data dir (one per process, so events are read incrementally)."""
    folder = jobs_dir()
    if folder not in _MANAGERS:
        _MANAGERS[folder] = JobManager(folder)
    return _MANAGERS[folder]
