"""Calibration Lab: Streamlit entry point. Draws the shared sidebar and routes to the pages."""

import streamlit as st

from app_ui.cache import access_policy
from app_ui.live import sidebar_jobs
from calib_core import assets
from calib_core.housekeeping import clean_stale_files
from calib_core.models import AUTO_DTYPE


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
st.session_state.setdefault("model_options", {"dtype": AUTO_DTYPE, "quantization": None, "trust_remote_code": False})
st.session_state.setdefault("calib_source", "builtin:wiki")
st.session_state.setdefault("device", "auto")

pages = st.navigation([
    st.Page("app_pages/home.py", title="Start", icon=":material/home:", default=True),
    st.Page("app_pages/model.py", title="Model", icon=":material/memory:"),
    st.Page("app_pages/calibration.py", title="Calibration data", icon=":material/dataset:"),
    st.Page("app_pages/similarity.py", title="Similarity", icon=":material/compare:"),
    st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("app_pages/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("app_pages/inside.py", title="Inside a layer", icon=":material/biotech:"),
    st.Page("app_pages/advisor.py", title="Advisor", icon=":material/recommend:"),
    st.Page("app_pages/sweeps.py", title="Sweeps", icon=":material/stacked_bar_chart:"),
])


with st.sidebar:
    if access_policy().shared:
        st.warning(f"Shared app: visitors reach files only in `{access_policy().workspace}`, sizes are capped and "
                   "repository code never runs.", icon=":material/lock:")
    choices = st.empty()  # filled after the page ran: it shows what the page just chose, not the previous choice
    sidebar_jobs(pages.url_path)

try:
    pages.run()
finally:  # also when a page stops early (st.stop)
    with choices.container():
        st.markdown(f"**Model:** `{st.session_state.model_spec}` on {st.session_state.device}")
        st.markdown(f"**Calibration:** `{st.session_state.calib_source}`")
