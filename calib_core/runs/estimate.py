"""How long a run or a sweep will take, from this machine's own earlier runs: each part of a run (model
load, calibration, pruning, perplexity, cloze) at the pace the earlier runs of the same model, method and
dtype measured, scaled by what this run does more or less of (calibration tokens, evaluation windows).
No earlier run of that kind, no number: the estimate says so instead of guessing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .spec import RunSpec


@dataclass
class TimeEstimate:
    seconds: float | None
    basis: str  # where the number comes from, or why there is none

    def describe(self) -> str:
        if self.seconds is None:
            return f"No time estimate yet: {self.basis}."
        return f"Estimated time: {_duration(self.seconds)} ({self.basis})."


def _duration(seconds: float) -> str:
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"


def _similar(spec: RunSpec, runs: list[dict]) -> list[dict]:
    """Finished runs of the same model, method (and base) and dtype, with their timings."""
    out = []
    for run in runs:
        record = run.get("record") or {}
        job, config = record.get("job") or {}, record.get("config") or {}
        if (run.get("status") == "finished" and record.get("timings") and job.get("model") == spec.model
                and config.get("method") == spec.config.method and config.get("base") == spec.config.base
                and job.get("dtype") == spec.dtype):
            out.append(record)
    return out


def _eval_windows(job: dict) -> int:
    return max(1, len(job.get("eval") or []) * int(job.get("eval_windows") or 1))


def estimate_run(spec: RunSpec, runs: list[dict], loaded: bool = False) -> TimeEstimate:
    """`spec`'s seconds from `runs` (RunStore.list()); `loaded`: the model is loaded already (a sweep's
    later points)."""
    similar = _similar(spec, runs)
    if not similar:
        return TimeEstimate(None, f"no earlier {spec.config.method} run of {spec.model} in {spec.dtype} on this "
                                  f"machine to take the pace from; the first one measures it")
    chose = [r for r in similar if r["job"].get("strategy", "random") == spec.strategy]
    if spec.config.needs_calibration and not chose:  # a selection can cost more than the pruning
        return TimeEstimate(None, f"no earlier run of {spec.model} chose its windows by {spec.strategy} on this "
                                  f"machine; the first one measures it")
    tokens = spec.nsamples * spec.seqlen if spec.config.needs_calibration else 1
    windows = max(1, len(spec.evaluation.sources) * int(spec.evaluation.windows or 1))
    parts = {"calibration": [r["timings"].get("calibration", 0.0) for r in chose], "prune": [], "eval": [],
             "cloze": [], "load": []}
    for record in similar:
        timings, job = record["timings"], record["job"]
        theirs = max(1, int(job.get("nsamples") or 0) * int(job.get("seqlen") or 0)) if spec.config.needs_calibration else 1
        parts["prune"].append(timings.get("prune_total", 0.0) / theirs * tokens)
        parts["eval"].append(timings.get("eval", 0.0) / _eval_windows(job) * windows)
        if spec.evaluation.cloze_items and job.get("cloze_items"):
            parts["cloze"].append(timings.get("cloze", 0.0) / int(job["cloze_items"]) * spec.evaluation.cloze_items)
        parts["load"].append(timings.get("load_model", 0.0))
    if loaded:
        parts.pop("load")
    seconds = sum(statistics.median(values) for values in parts.values() if values)
    return TimeEstimate(seconds, f"from {len(similar)} earlier {spec.config.method} run(s) of this model on this machine")


def estimate_sweep(grid, runs: list[dict], done: set[str] | None = None) -> TimeEstimate:
    """A sweep's points not in `done` (finished point keys), the model loaded once; a point of a kind this
    machine has not run yet makes the whole estimate unknown (it says which)."""
    todo = [p for p in grid.points() if p.key not in (done or set())]
    if not todo:
        return TimeEstimate(0.0, "every point already finished")
    total = 0.0
    for number, point in enumerate(todo):
        part = estimate_run(grid.spec(point), runs, loaded=number > 0)
        if part.seconds is None:
            return TimeEstimate(None, part.basis)
        total += part.seconds
    return TimeEstimate(total, f"{len(todo)} point(s), at the pace of earlier runs of this model on this machine")
