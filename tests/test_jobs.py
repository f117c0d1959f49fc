"""Background jobs: queued per device, events kept, cancel and failure reported."""

import threading
import time

from calib_core.errors import PruningCancelled, SourceError
from calib_core.jobs import JobManager


def wait(job, timeout=120):  # a bound for a loaded machine, not a target
    deadline = time.time() + timeout
    while not job.done and time.time() < deadline:
        time.sleep(0.01)
    return job


def test_jobs_on_one_device_run_one_at_a_time_in_order():
    manager = JobManager()
    gate = threading.Event()
    running = []

    started = threading.Event()

    def slow(job):
        running.append(job.id)
        job.emit("started")
        started.set()
        gate.wait(60)
        return job.id * 10

    first = manager.submit("a", slow)
    second = manager.submit("b", slow)
    assert started.wait(60)
    assert first.status == "running" and second.status == "queued" and manager.position(second) == 1
    gate.set()
    assert wait(first).result == 10 and wait(second).result == 20
    assert running == [first.id, second.id] and first.events == ["started"]


def test_cancel_and_failures_are_reported():
    manager = JobManager()

    started = threading.Event()

    def cancellable(job):
        started.set()
        job.cancel_event.wait(120)
        raise PruningCancelled("stopped")

    job = manager.submit("c", cancellable)
    assert started.wait(120)  # cancel a running job, not a queued one
    job.cancel()
    assert wait(job).status == "cancelled" and job.error == "stopped"
    bad = wait(manager.submit("d", lambda job: (_ for _ in ()).throw(SourceError("no such file"))))
    assert bad.status == "failed" and bad.error == "no such file"
    broken = wait(manager.submit("e", lambda job: 1 / 0))
    assert broken.status == "failed" and "ZeroDivisionError" in broken.error
    after = wait(manager.submit("f", lambda job: "ok"))
    assert after.result == "ok"  # the worker survived the failures


def test_only_the_latest_finished_jobs_stay_in_memory():
    manager = JobManager(keep_finished=2)
    jobs = [manager.submit(f"j{i}", lambda job: job.id) for i in range(5)]
    for job in jobs:
        assert wait(job).status == "finished"
    deadline = time.time() + 120  # the worker forgets old jobs right after each one ends
    while len(manager.jobs()) > 2 and time.time() < deadline:
        time.sleep(0.01)
    assert [j.id for j in manager.jobs()] == [jobs[3].id, jobs[4].id]
    assert manager.get(jobs[0].id) is None and manager.get(jobs[4].id).result == jobs[4].id
