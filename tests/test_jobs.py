"""Background jobs run in worker processes: queued per device in order, events read by any reader,
cancel and failures reported, a dead worker recorded as failed, and a job outlives its server."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calib_core.errors import PruningCancelled, SourceError
from calib_core.jobs import JobManager

ROOT = Path(__file__).resolve().parent.parent


def wait(job, timeout=180):  # a bound for a loaded machine, not a target
    deadline = time.time() + timeout
    while not job.done and time.time() < deadline:
        time.sleep(0.05)
    return job


def wait_for(condition, timeout=180):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.05)


# Work functions: module-level, because a worker finds them by name.
def gated(job, gate: str, value):
    """Emits 'started', then waits until the file `gate` exists."""
    job.emit("started")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return value


def until_cancelled(job, message):
    job.emit(message)
    job.cancel_event.wait(180)
    raise PruningCancelled("stopped")


def fails(job, error):
    raise error


class Note:
    def __init__(self, message):
        self.message = message


def dies(job, message):
    job.emit(Note(message))
    os.kill(os.getpid(), signal.SIGKILL)


def echo(job, value):
    return value


def test_every_name_of_one_gpu_is_one_queue(tmp_path, fake_cuda):
    """'auto', 'cuda' and 'cuda:0' on a one-GPU machine are one physical device: one queue, one lock
    (before, the raw strings were the keys and two jobs ran on the GPU at once)."""
    from calib_core.errors import DeviceError

    manager = JobManager(tmp_path / "jobs")
    gate = tmp_path / "gate"
    jobs = [manager.submit(name, gated, str(gate), name, device=name) for name in ("auto", "cuda", "cuda:0")]
    assert [j.device for j in jobs] == ["cuda:0"] * 3
    wait_for(lambda: jobs[0].events == ["started"])
    assert [manager.position(j) for j in jobs] == [0, 1, 2] and jobs[2].status == "queued"
    gate.touch()
    assert [wait(j).result for j in jobs] == ["auto", "cuda", "cuda:0"]
    assert jobs[0].ended <= jobs[1].started and jobs[1].ended <= jobs[2].started
    assert list((tmp_path / "jobs").glob("device-*.lock")) == [tmp_path / "jobs" / "device-cuda-0.lock"]
    with pytest.raises(DeviceError, match="has 1 CUDA device"):  # refused before any worker starts
        manager.submit("x", echo, 1, device="cuda:1")
    assert len(manager.active()) == 0


def test_jobs_on_one_device_run_one_at_a_time_in_order(tmp_path, fake_cuda):
    manager = JobManager(tmp_path / "jobs")
    gate = tmp_path / "gate"
    first = manager.submit("a", gated, str(gate), 10, device="cpu")
    second = manager.submit("b", gated, str(gate), 20, device="cpu")
    other = manager.submit("c", echo, "elsewhere", device="cuda:0")  # another device does not wait
    wait_for(lambda: first.events == ["started"])
    assert wait(other).result == "elsewhere"
    assert first.status == "running" and second.status == "queued" and manager.position(second) == 1
    gate.touch()
    assert wait(first).result == 10 and wait(second).result == 20
    assert first.ended <= second.started and second.events == ["started"]
    assert first.pid != second.pid != os.getpid()  # each job had its own process


def test_cancel_and_failures_are_reported(tmp_path):
    manager = JobManager(tmp_path / "jobs")
    job = manager.submit("c", until_cancelled, "waiting")
    wait_for(lambda: job.events == ["waiting"])  # cancel a running job, not a queued one
    job.cancel()
    assert wait(job).status == "cancelled" and job.error == "stopped"
    queued_behind = manager.submit("gate", gated, str(tmp_path / "gate"), 1)
    queued = manager.submit("never", echo, "ran")
    wait_for(lambda: queued_behind.status == "running")
    queued.cancel()
    (tmp_path / "gate").touch()
    assert wait(queued).status == "cancelled" and queued.started is None  # never started
    bad = wait(manager.submit("d", fails, SourceError("no such file")))
    assert bad.status == "failed" and bad.error == "no such file"
    broken = wait(manager.submit("e", fails, ZeroDivisionError("division by zero")))
    assert broken.status == "failed" and "ZeroDivisionError" in broken.error


def test_a_dead_worker_is_recorded_as_failed_with_its_last_message(tmp_path):
    manager = JobManager(tmp_path / "jobs")
    job = wait(manager.submit("k", dies, "block 3 of 30"))
    assert job.status == "failed"
    assert "ended unexpectedly" in job.error and "block 3 of 30" in job.error
    after = wait(manager.submit("next", echo, "ok"))  # the device is free again
    assert after.result == "ok"


def test_a_job_outlives_the_server_that_started_it(tmp_path):
    """A 'server' process submits a job and exits at once; the job runs on, and another manager (a
    restarted server) sees it, reads its events, and can cancel it."""
    folder = tmp_path / "jobs"
    server = subprocess.run(
        [sys.executable, "-c", "import sys; from calib_core.jobs import JobManager; from tests.test_jobs import "
         "until_cancelled; print(JobManager(sys.argv[1]).submit('long', until_cancelled, 'alive').id)", str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert server.returncode == 0, server.stderr
    restarted = JobManager(folder)
    job = restarted.get(int(server.stdout))
    wait_for(lambda: job.events == ["alive"])
    assert job.status == "running" and restarted.latest("") is job
    job.cancel()
    assert wait(job).status == "cancelled"


def test_only_the_latest_finished_jobs_keep_their_folders(tmp_path):
    manager = JobManager(tmp_path / "jobs", keep_finished=2)
    jobs = [wait(manager.submit(f"j{i}", echo, i)) for i in range(4)]
    assert all(job.status == "finished" for job in jobs)
    manager.submit("last", echo, 4)
    assert [j.id for j in manager.jobs()][:2] == [jobs[2].id, jobs[3].id]
    assert manager.get(jobs[0].id) is None and manager.get(jobs[3].id).result == 3


def test_a_job_naming_code_this_release_lacks_fails_with_a_clear_message(tmp_path, monkeypatch):
    """0.1.0's shims (calib_core.tasks, calib_core.pipeline, calib_core.worker) are gone since 0.2.0: a task.pkl
    naming code the worker cannot import (here a module only this test process can see) fails its job with what
    happened and what to do, not a traceback."""
    import importlib

    (tmp_path / "gone_from_this_release.py").write_text("def work(job, x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gone = importlib.import_module("gone_from_this_release")
    manager = JobManager(tmp_path / "jobs")
    job = wait(manager.submit("from an earlier release", gone.work, 1))
    assert job.status == "failed" and "queued by an earlier release" in job.error and "queue it again" in job.error
    assert "gone_from_this_release" in job.error, job.error
