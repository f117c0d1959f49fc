"""The process that runs one background job: `python -m calib_core.jobs.worker JOB_FOLDER` (started
by JobManager.submit; see jobs/__init__.py for the folder's files).

It waits for its turn on its device, runs the task with the job as its event sink and cancel token,
and records the outcome. A cancel file becomes the job's cancel event within a fraction of a second."""

from __future__ import annotations

import fcntl
import pickle
import sys
import threading
import time
import traceback
from pathlib import Path

from ..errors import CalibLabError, PruningCancelled
from . import Job, JobManager

POLL_SECONDS = 0.2
STATUS_WAIT_SECONDS = 120  # the server writes status.json right after starting us


def _open_job(folder: Path) -> Job:
    deadline = time.time() + STATUS_WAIT_SECONDS
    while (job := Job.open(folder)) is None:
        if time.time() > deadline:
            raise SystemExit(f"{folder}: no status.json appeared")
        time.sleep(0.05)
    return job


def _wait_for_turn(job: Job, manager: JobManager):
    """Block until no older live job on this device is pending; return the device lock (held until
    this process exits), or None when the job was cancelled while queued."""
    # job.device is a physical device's key (devices.device_key): one lock file per device.
    lock = open(manager.folder / f"device-{job.device.replace(':', '-')}.lock", "a")
    while not job.cancel_requested:
        ahead = [j for j in manager.active() if j.device == job.device and j.id < job.id]
        if not ahead:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return lock
            except BlockingIOError:
                pass  # a job of another manager folder or an older layout still holds it
        time.sleep(POLL_SECONDS)
    lock.close()
    return None


def _watch_cancel(job: Job) -> None:
    while not job.cancel_event.is_set():
        if job.cancel_requested:
            job.cancel_event.set()
        time.sleep(POLL_SECONDS)


def run(folder: Path) -> None:
    job = _open_job(folder)
    try:
        work, args = pickle.loads((folder / "task.pkl").read_bytes())
    except (ModuleNotFoundError, AttributeError) as exc:  # it names code this release no longer has
        job.write_state(status="failed", ended=time.time(),
                        error=f"This job was queued by an earlier release of Calibration Lab and names code this "
                              f"release does not have ({exc}); queue it again.")
        return
    if _wait_for_turn(job, JobManager(folder.parent)) is None:
        job.write_state(status="cancelled", ended=time.time(), error="Cancelled before it started.")
        return
    job.write_state(status="running", started=time.time())
    threading.Thread(target=_watch_cancel, args=(job,), daemon=True).start()
    try:
        result = work(job, *args)
        job.write_result(result)
        outcome = dict(status="finished")
    except PruningCancelled as exc:
        outcome = dict(status="cancelled", error=str(exc))
    except CalibLabError as exc:
        outcome = dict(status="failed", error=str(exc))
    except Exception as exc:  # show the user what broke
        outcome = dict(status="failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    job.cancel_event.set()  # stops the watcher
    job.write_state(ended=time.time(), **outcome)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
