"""Calibration Lab: Streamlit entry point (start page; the full multipage app is issue #4)."""

import streamlit as st

from calib_core import assets

st.set_page_config(page_title="Calibration Lab", layout="wide")
st.title("Calibration Lab")
st.write(
    "How calibration data shapes post-training pruning of large language models. "
    f"Default model: `{assets.DEFAULT_MODEL}` (bundled, offline)."
)
st.caption(assets.BUNDLED_CAVEAT)


@st.cache_resource(show_spinner="Loading the model (the first run converts the bundled GGUF once)...")
def _load(spec: str):
    from calib_core.models import load_model

    return load_model(spec)


if st.button("Load the default model and show its structure"):
    from calib_core.models import describe_model

    st.json(describe_model(_load(assets.DEFAULT_MODEL).model))
st.markdown("The pruning engine is available today from the command line: `python -m calib_core prune --help`.")
