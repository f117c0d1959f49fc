"""Streamlit-side caches shared by the pages (the library itself never imports streamlit)."""

import os

import streamlit as st

from calib_core.access import SHARED_ENV, WORKSPACE_ENV, AccessPolicy
from calib_core.models import load_model


@st.cache_resource(show_spinner=False)
def _policy(address, shared, workspace) -> AccessPolicy:
    return AccessPolicy.for_server(address)


def access_policy() -> AccessPolicy:
    """Full access when the server listens on loopback only; confined when it is exposed (see
    calib_core.access). Every page passes what a visitor sends through it."""
    return _policy(st.get_option("server.address"), os.environ.get(SHARED_ENV), os.environ.get(WORKSPACE_ENV))


@st.cache_resource(show_spinner=False, max_entries=2)
def _load(spec: str, dtype: str, trust_remote_code: bool):
    return load_model(spec, dtype=dtype, trust_remote_code=trust_remote_code)


def cached_model(spec: str, dtype: str = "float32", quantization=None, trust_remote_code: bool = False):
    """The server's own copy of a model, on the CPU: for its description, tokenizer and memory
    estimates. Never quantized: an 8-/4-bit load lands on a GPU, and the server's copy would hold GPU
    memory outside the job queue; the jobs that generate or score load it quantized themselves."""
    spec = access_policy().model(spec, trust_remote_code)
    return _load(spec, dtype, trust_remote_code)


def mark_model_loaded() -> None:
    """Say that this session's model is in the server's cache: pages then show what needs it (its
    description, memory estimates, token counts) without asking to load it."""
    st.session_state.model_loaded = True


def model_loaded() -> bool:
    return bool(st.session_state.get("model_loaded"))
