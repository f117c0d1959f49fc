"""Live views of background jobs: which job a page shows, a fragment that refreshes only while that
job runs, and figures built once per finished block (shared by every tab)."""

from __future__ import annotations

import threading
from typing import Callable

import streamlit as st

from calib_core.jobs import Job, manager

REFRESH_SECONDS = 2.0  # a progress line a viewer can follow
CHART_REFRESH_SECONDS = 5.0  # each chart refresh costs every open browser ~0.1 s of CPU per figure
_FIGURES: dict = {}  # (job folder, builder) -> (stamp, figures)
_FIGURES_LOCK = threading.Lock()


def current_job(key: str, kind: str) -> Job | None:
    """The job this session started under `key`; else the newest running job of `kind`, so that a
    reload or a second tab shows the job (with its Cancel) instead of an empty page."""
    job = manager().get(st.session_state.get(key))
    if job is None or job.done:
        running = manager().latest(kind)
        if running is not None:
            st.session_state[key] = running.id
            return running
    if job is None and st.session_state.get(key):
        st.caption(f"Job {st.session_state[key]} ended a while ago; its run, if it made one, is on the Results page.")
    return job


def job_header(job: Job) -> None:
    head = f"Job {job.id} ({job.label}): **{job.status}**"
    if job.status == "queued":
        head += f", waiting for {manager().position(job)} job(s) on {job.device}"
    st.markdown(head)


def live_view(key: str, kind: str, draw: Callable[[Job], None], empty: str | None = None,
              charts: Callable[[Job], None] | None = None, live_charts: bool = True) -> None:
    """Draw the page's job with `draw(job)` (its progress line: cheap to redraw) and `charts(job)`, each in
    a fragment refreshed only while the job is pending: the progress every REFRESH_SECONDS, the charts
    every CHART_REFRESH_SECONDS (a browser redrawing plotly figures is what a viewer costs the job's
    CPUs) or, without `live_charts`, once the job ended. Nothing refreshes without a pending job. When
    the job ends, the whole page reruns once, so what depends on its result (the final charts, a
    results tab, a list of sets) shows it at once."""
    job = current_job(key, kind)
    pending = job is not None and not job.done

    def view():
        shown = manager().get(st.session_state.get(key))
        if shown is None:
            if empty:
                st.caption(empty)
            return
        job_header(shown)
        draw(shown)
        if pending and shown.done:
            st.rerun()

    st.fragment(view, run_every=REFRESH_SECONDS if pending else None)()

    def chart_view():
        charts(manager().get(job.id) or job)

    if charts is not None and job is not None:
        st.fragment(chart_view, run_every=CHART_REFRESH_SECONDS if pending and live_charts else None)()


def figures_of(job: Job, build: Callable[[list], dict]) -> dict:
    """`build(events)`, computed once per finished block of this job, whatever the number of tabs and
    reruns; a refresh without a new block sends the same figures again."""
    events = job.events
    # New charts only when a block ended (or the job did): module events arrive in between.
    stamp = (sum(getattr(e, "kind", "") in ("block", "allocation") for e in events), job.status)
    with _FIGURES_LOCK:
        cached = _FIGURES.get((job.folder, build.__qualname__))
        if cached and cached[0] == stamp:
            return cached[1]
    figures = build(events)
    with _FIGURES_LOCK:
        if len(_FIGURES) > 64:  # old jobs' figures
            _FIGURES.clear()
        _FIGURES[(job.folder, build.__qualname__)] = (stamp, figures)
    return figures
