"""Calibration Lab: Streamlit entry point. Draws the shared sidebar and routes to the pages."""

import streamlit as st

from calib_core import assets
from calib_core.jobs import manager
from calib_core.housekeeping import clean_stale_files
from ui_cache import access_policy


@st.cache_resource(show_spinner=False)
def _started() -> bool:  # once per server: remove what killed processes left behind
    clean_stale_files()
    return True


_started()

st.set_page_config(page_title="Calibration Lab", layout="wide")
st.session_state.setdefault("model_spec", assets.DEFAULT_MODEL)
st.session_state.setdefault("model_options", {"dtype": "float32", "quantization": None, "trust_remote_code": False})
st.session_state.setdefault("calib_source", "builtin:wiki")
st.session_state.setdefault("device", "auto")

pages = st.navigation([
    st.Page("pages/home.py", title="Start", icon=":material/home:", default=True),
    st.Page("pages/model.py", title="Model", icon=":material/memory:"),
    st.Page("pages/calibration.py", title="Calibration data", icon=":material/dataset:"),
    st.Page("pages/similarity.py", title="Similarity", icon=":material/compare:"),
    st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("pages/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/stacked_bar_chart:"),
])


@st.fragment(run_every=2.0)
def job_status():  # refreshed on its own so a finished job does not show as running
    active = [j for j in manager().jobs() if not j.done]
    for job in active:
        where = f", {manager().position(job)} ahead on {job.device}" if job.status == "queued" else ""
        st.markdown(f"**Job {job.id}** {job.label}: {job.status}{where}")
    if not active:
        st.caption("No job running.")


with st.sidebar:
    if access_policy().shared:
        st.warning(f"Shared app: visitors reach files only in `{access_policy().workspace}`, sizes are capped and "
                   "repository code never runs.", icon=":material/lock:")
    st.markdown(f"**Model:** `{st.session_state.model_spec}` on {st.session_state.device}")
    st.markdown(f"**Calibration:** `{st.session_state.calib_source}`")
    job_status()

pages.run()
