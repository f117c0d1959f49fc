"""Live views of background jobs: which job a page shows, one fragment that refreshes only while that
job runs, and figures built once per finished block (shared by every tab) and redrawn in each tab at
a pace that keeps the watching browsers' total cost flat however many tabs watch."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Callable, NamedTuple

import streamlit as st

from calib_core.jobs import Job, manager

REFRESH_SECONDS = 3.0  # a progress line a viewer can follow; each refresh costs every watching browser CPU
# A browser redrawing plotly figures is what a viewer costs the job's CPUs (bench/tab_cost.py: about
# 0.07 CPU s per figure updated in place, 0.013 s per figure sent again unchanged). All tabs watching
# one job together redraw their charts about once per CHART_REFRESH_SECONDS: each tab every
# CHART_REFRESH_SECONDS x viewers.
CHART_REFRESH_SECONDS = 5.0
VIEWER_TIMEOUT_SECONDS = 3 * REFRESH_SECONDS  # a tab unseen for this long (closed, reloaded) stops counting
_FIGURES: dict = {}  # (job folder, builder) -> (stamp, figures)
_FIGURES_LOCK = threading.Lock()
_VIEWERS: dict[str, tuple[str, float]] = {}  # a tab's viewer id -> (job folder it shows, when last seen)
_VIEWERS_LOCK = threading.Lock()
# The kind of job each page follows live (live_view). While such a job is pending that view refreshes
# and reruns the page when the job ends, so the sidebar's list need not refresh as well: every
# refresh costs each watching browser CPU time that the job would use.
# A page's kind is written only here: the page reads it with page_kind(__file__).
LIVE_KINDS = {"prune": "prune", "calibration": "selfgen", "similarity": "similarity", "sweeps": "sweep",
              "results": "dense", "home": "demo", "advisor": "advise"}
JOBS_REFRESH_SECONDS = 5.0  # the sidebar's list changes only when a job starts, ends or moves up the queue
IDLE_WATCH_SECONDS = 5.0  # how soon an idle tab (a projector's) notices a job started elsewhere


def page_kind(page_file: str) -> str:
    """The kind of job the page in `page_file` starts and follows (LIVE_KINDS, by the page's file stem)."""
    return LIVE_KINDS[Path(page_file).stem]


def sidebar_jobs(url_path: str) -> None:
    """The app's pending jobs in the sidebar, from every tab. While the page's own live view follows a
    pending job, the list does not refresh as well (each refresh costs every watching browser)."""
    active = manager().active()
    followed = any(job.kind == LIVE_KINDS.get(url_path) for job in active)
    every = None if followed else JOBS_REFRESH_SECONDS if active else IDLE_WATCH_SECONDS
    st.fragment(_job_list, run_every=every)(bool(active))


def _job_list(pending: bool) -> None:
    """Refreshed every JOBS_REFRESH_SECONDS while a job is pending (reading it is a folder listing); an
    idle tab only checks, every IDLE_WATCH_SECONDS, whether a job started (it redraws nothing until one
    does). When a job starts or the last one ends, the page reruns once."""
    active = manager().active()
    for job in active:
        st.markdown(f"**Job {job.id}** {job.label}: {job_state(job)}")
    if not active:
        st.caption("No job running.")
    if bool(active) != pending:
        st.rerun()


def current_job(key: str, kind: str, show_last: bool = False) -> Job | None:
    """The job this session started under `key`; else the newest running job of `kind`, so that a
    reload or a second tab shows the job (with its Cancel) instead of an empty page; else, with
    `show_last`, the newest job of `kind` that ended."""
    job = manager().get(st.session_state.get(key))
    if job is None or job.done:
        running = manager().latest(kind)
        if running is not None:
            st.session_state[key] = running.id
            return running
    if job is None and show_last and (job := manager().newest(kind)) is not None:
        st.session_state[key] = job.id
        return job
    if job is None and st.session_state.get(key):
        st.caption(f"Job {st.session_state[key]} ended a while ago; its run, if it made one, is on the Results page.")
    return job


def job_state(job: Job) -> str:
    """A job's state in words: a queued job says how many jobs run before it on its device, or that it is
    starting when none does (it is handed to a worker within a second)."""
    if job.status != "queued":
        return job.status
    ahead = manager().position(job)
    return f"queued behind {ahead} job(s) on {job.device}" if ahead else f"starting on {job.device}"


def job_header(job: Job) -> None:
    st.markdown(f"Job {job.id} ({job.label}): **{job_state(job)}**")


def live_view(key: str, kind: str, draw: Callable[[Job], None], empty: str | None = None,
              charts: Callable[[Job], None] | None = None, live_charts: bool = True, show_last: bool = False) -> None:
    """Draw the page's job with `draw(job)` (its progress line) and `charts(job)`, in one fragment
    refreshed every REFRESH_SECONDS only while the job is pending (each refresh has a fixed cost in
    every watching browser, so there is one fragment, not one per part). `charts` draws figures from
    `figures_of`, which sends each tab new figures only at its turn; without `live_charts` the charts
    are drawn once the job ended. The charts have a container of their own, so that they keep their
    place on the page whatever the progress part shows: a chart that stays is updated in place by the
    browser (a new one costs it several times more). Nothing refreshes without a pending job. When
    the job ends, the whole page reruns once, so what depends on its result (a results tab, a list of
    sets) shows it. `show_last`: see current_job."""
    job = current_job(key, kind, show_last)
    pending = job is not None and not job.done

    def view():
        shown = manager().get(st.session_state.get(key))
        if shown is None:
            if empty:
                st.caption(empty)
            return
        if not shown.done:
            _seen_watching(shown)
        progress_area, chart_area = st.container(), st.container()
        with progress_area:
            job_header(shown)
            draw(shown)
        with chart_area:
            if charts is not None and (live_charts or shown.done):
                charts(shown)
            elif charts is not None:
                st.caption("The charts appear when the run ends (live charts are off).")
        if pending and shown.done:
            st.rerun()

    st.fragment(view, run_every=REFRESH_SECONDS if pending else None)()


def _viewer_id() -> str:
    return st.session_state.setdefault("_viewer_id", uuid.uuid4().hex)


def _seen_watching(job: Job) -> None:
    now = time.monotonic()
    with _VIEWERS_LOCK:
        _VIEWERS[_viewer_id()] = (str(job.folder), now)
        for viewer, (_, seen) in list(_VIEWERS.items()):
            if now - seen > VIEWER_TIMEOUT_SECONDS:
                del _VIEWERS[viewer]


def viewers(job: Job) -> int:
    """How many tabs showed this running job within the last VIEWER_TIMEOUT_SECONDS (at least 1)."""
    with _VIEWERS_LOCK:
        return max(1, sum(folder == str(job.folder) for folder, _ in _VIEWERS.values()))


class _Shown(NamedTuple):
    """The figures a tab shows (session state): of which job and builder, since when, of which stamp."""

    key: tuple
    since: float
    stamp: tuple
    figures: dict


def figures_of(job: Job, build: Callable[[list], dict]) -> dict:
    """`build(events)`, computed at most once per finished block of this job, whatever the number of
    tabs and reruns. While the job runs, this tab gets the newest figures at most every
    CHART_REFRESH_SECONDS x viewers (the first block's at once) and otherwise the ones it shows
    already, which its browser does not redraw; figures no tab asks for are not built (a plotly figure
    takes the server tens of ms). Once the job ended, the final figures."""
    events = job.events
    # New charts only when a block ended (or the job did): module events arrive in between.
    stamp = (sum(getattr(e, "kind", "") in ("block", "allocation") for e in events), job.status)
    key, now = (str(job.folder), build.__qualname__), time.monotonic()
    shown = st.session_state.get("_shown_figures")  # one job's per tab
    if (not job.done and shown is not None and shown.key == key and shown.stamp[0] > 0
            and now - shown.since < CHART_REFRESH_SECONDS * viewers(job)):
        return shown.figures
    with _FIGURES_LOCK:
        cached = _FIGURES.get(key)
    if cached is None or cached[0] != stamp:
        cached = (stamp, build(events))
        with _FIGURES_LOCK:
            if len(_FIGURES) > 64:  # old jobs' figures
                _FIGURES.clear()
            _FIGURES[key] = cached
    if shown is None or shown.key != key or shown.stamp != stamp:
        st.session_state["_shown_figures"] = _Shown(key, now, stamp, cached[1])
    return cached[1]
