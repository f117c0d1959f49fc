"""Streamlit-side caches shared by the pages (the library itself never imports streamlit)."""

import streamlit as st

from calib_core.models import load_model


@st.cache_resource(show_spinner=False, max_entries=2)
def _load(spec: str, dtype: str, quantization, trust_remote_code: bool):
    return load_model(spec, dtype=dtype, quantization=quantization, trust_remote_code=trust_remote_code)


def cached_model(spec: str, dtype: str = "float32", quantization=None, trust_remote_code: bool = False):
    loaded = _load(spec, dtype, quantization, trust_remote_code)
    st.session_state.model_loaded = True
    return loaded
