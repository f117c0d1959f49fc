"""Moved: the app's tasks are `calib_core.jobs.tasks`. Kept for one release so that a job queued
before an upgrade (its pickle names `calib_core.tasks.<task>`) still runs."""

from .jobs.tasks import dense_baseline, prune, self_generate, similarity, sweep

__all__ = ["dense_baseline", "prune", "self_generate", "similarity", "sweep"]
