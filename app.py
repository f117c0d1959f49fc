"""Calibration Lab: Streamlit entry point. Draws the shared sidebar and routes to the pages."""

import streamlit as st

from calib_core import assets
from calib_core.jobs import manager
from calib_core.housekeeping import clean_stale_files
from ui_cache import access_policy
from ui_live import LIVE_KINDS


@st.cache_resource(show_spinner=False)
def _started() -> bool:  # once per server: remove what killed processes left behind
    clean_stale_files()
    return True


_started()

st.set_page_config(page_title="Calibration Lab", layout="wide")
# A progress bar eases to each new value over 0.5 s: every refresh of a running job's progress then
# has the browser draw some 30 frames, which doubled what a watching tab costs the job's CPUs.
st.html("<style>[data-testid='stProgressBarTrack'] > div { transition: none !important; }</style>")
st.session_state.setdefault("model_spec", assets.DEFAULT_MODEL)
st.session_state.setdefault("model_options", {"dtype": "float32", "quantization": None, "trust_remote_code": False})
st.session_state.setdefault("calib_source", "builtin:wiki")
st.session_state.setdefault("device", "auto")

pages = st.navigation([
    st.Page("views/home.py", title="Start", icon=":material/home:", default=True),
    st.Page("views/model.py", title="Model", icon=":material/memory:"),
    st.Page("views/calibration.py", title="Calibration data", icon=":material/dataset:"),
    st.Page("views/similarity.py", title="Similarity", icon=":material/compare:"),
    st.Page("views/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("views/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("views/sweeps.py", title="Sweeps", icon=":material/stacked_bar_chart:"),
])


JOBS_REFRESH_SECONDS = 5.0  # the list changes only when a job starts, ends or moves up the queue
IDLE_WATCH_SECONDS = 5.0  # how soon an idle tab (a projector's) notices a job started elsewhere


def job_status(pending: bool):
    """The app's pending jobs, from every tab: refreshed every JOBS_REFRESH_SECONDS while one is pending
    (reading it is a folder listing). An idle tab only checks, every IDLE_WATCH_SECONDS, whether a job started
    (it redraws nothing until one does). When a job starts or the last one ends, the page reruns once."""
    active = manager().active()
    for job in active:
        where = f", {manager().position(job)} ahead on {job.device}" if job.status == "queued" else ""
        st.markdown(f"**Job {job.id}** {job.label}: {job.status}{where}")
    if not active:
        st.caption("No job running.")
    if bool(active) != pending:
        st.rerun()


with st.sidebar:
    if access_policy().shared:
        st.warning(f"Shared app: visitors reach files only in `{access_policy().workspace}`, sizes are capped and "
                   "repository code never runs.", icon=":material/lock:")
    st.markdown(f"**Model:** `{st.session_state.model_spec}` on {st.session_state.device}")
    st.markdown(f"**Calibration:** `{st.session_state.calib_source}`")
    active = manager().active()
    pending = bool(active)
    followed = any(job.kind == LIVE_KINDS.get(pages.url_path) for job in active)
    st.fragment(job_status, run_every=None if followed else JOBS_REFRESH_SECONDS if pending else IDLE_WATCH_SECONDS)(
        pending)

pages.run()
