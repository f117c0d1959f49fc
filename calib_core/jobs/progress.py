"""Where a pruning run is, in words a viewer can trust: the current phase, its own step count and an
ETA from that phase's own pace (never from time spent in earlier phases, so OWL's outlier scan or a
slow model load does not inflate the pruning ETA)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import ENDED

PHASE_NAMES = {"outlier_scan": "OWL outlier scan", "prune": "Pruning"}


@dataclass
class RunProgress:
    phase: str  # what is happening now, e.g. "Pruning" or "Evaluating perplexity"
    fraction: float  # of the current phase, 0..1
    text: str  # one line: phase, steps, seconds in the phase, ETA when it can be known


CAPTURING = RunProgress("Capturing inputs", 0.0, "Capturing the first block's inputs")


def _steps(phase: str, done: int, total: int, unit: str, since: float, now: float) -> RunProgress:
    elapsed = max(now - since, 0.0)
    text = f"{phase}: {done}/{total} {unit}, {elapsed:.0f} s"
    if 0 < done < total:
        text += f", about {elapsed / done * (total - done):.0f} s left in this phase"
    return RunProgress(phase, done / max(total, 1), text)


def run_progress(events: list, status: str, now: float | None = None) -> RunProgress:
    """The progress line of a prune job from its events (in order) and its status."""
    now = now or time.time()
    if status == "queued":
        return RunProgress("Queued", 0.0, "Queued: waiting for the device")
    if status in ENDED:
        return RunProgress(status.capitalize(), 1.0 if status == "finished" else 0.0, status.capitalize())
    stages = [e for e in events if getattr(e, "kind", "") == "stage"]
    pipeline = [e for e in events if getattr(e, "kind", "") == "pipeline"]
    last_pipeline = pipeline[-1] if pipeline else None
    if last_pipeline is not None and last_pipeline.stage == "eval":
        data = last_pipeline.data
        return RunProgress("Evaluating perplexity", (data["number"] - 1) / data["total"],
                           f"Evaluating perplexity on {data['source']} ({data['number']} of {data['total']}), "
                           f"{now - last_pipeline.at:.0f} s")
    if last_pipeline is not None and last_pipeline.stage in ("ppl", "cloze", "zeroshot"):
        return RunProgress("Evaluating", 1.0, f"Evaluating: {last_pipeline.message}")
    if stages:
        last = stages[-1]
        if last.stage == "capture":
            return CAPTURING
        first = next(i for i, e in enumerate(events) if getattr(e, "kind", "") == "stage" and e.stage == last.stage)
        return _steps(PHASE_NAMES.get(last.stage, last.stage), last.step, last.total, "blocks",
                      _phase_start(events, first), now)
    if last_pipeline is None or last_pipeline.stage == "run":
        return RunProgress("Loading", 0.0, "Loading the model")
    if last_pipeline.stage in ("load", "calibration"):
        return RunProgress("Preparing", 0.0, "Building the calibration samples")
    if last_pipeline.stage == "estimate":  # the engine starts right after the memory estimate
        return CAPTURING
    return RunProgress("Starting", 0.0, last_pipeline.message)


def _phase_start(events: list, first: int) -> float:
    """When the phase whose first event is events[first] began: that event's time if it marks step
    0, else the time of the last timed event before it (the phase began when that one ended)."""
    if getattr(events[first], "step", None) == 0:
        return events[first].at
    timed = [e.at for e in events[:first] if hasattr(e, "at")]
    return timed[-1] if timed else events[first].at


def sweep_progress(events: list, status: str, now: float | None = None) -> RunProgress:
    """The progress line of a sweep job (a sweep, the demo): which point runs, how many finished, and an ETA
    from the finished points' own pace (each sweep's first point also loads the model: the ETA is an
    upper bound at first and settles as points finish)."""
    now = now or time.time()
    marks = [e for e in events if getattr(e, "kind", "") == "pipeline" and e.stage == "sweep"]
    plans = [e for e in marks if "todo" in e.data]
    points = [e for e in marks if "key" in e.data]
    todo = sum(e.data["todo"] for e in plans)
    if status == "queued":
        return RunProgress("Queued", 0.0, "Queued: waiting for the device")
    if status in ENDED:
        return RunProgress(status.capitalize(), 1.0 if status == "finished" else len(points) / max(todo, 1),
                           f"{status.capitalize()}: {len(points) if status != 'finished' else todo} of {todo} points")
    if not plans:
        return RunProgress("Planning", 0.0, "Planning the sweep: which points already finished")
    if not todo:
        return RunProgress("Finishing", 1.0, "Every point already finished")
    if not points:
        return RunProgress("Loading", 0.0, f"{todo} points to run: loading the model")
    finished = len(points) - 1
    elapsed = max(now - points[0].at, 0.0)
    text = f"{points[-1].message} · {finished} of {todo} finished, {elapsed:.0f} s"
    if finished:
        text += f", about {elapsed / finished * (todo - finished):.0f} s left"
    return RunProgress("Sweeping", finished / todo, text)


def generation_line(progress) -> str:
    """A self-generation job's progress line from its latest GenerationProgress: the rate is measured when a
    batch ends, so before the first batch ends there is none to show (not 0.0 tokens/s)."""
    text = f"{progress.texts_done}/{progress.texts_total} texts done"
    if progress.texts_done and progress.tokens_per_second:
        text += f", {progress.tokens_per_second:.1f} tokens/s"
    if progress.batch_tokens is not None:
        batch = "first batch" if not progress.texts_done else "batch"
        text += f"; {batch} in progress: {progress.batch_tokens}/{progress.max_new_tokens} new tokens"
    return text
