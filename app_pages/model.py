"""Model: pick the causal LM every page and job uses (a bundled model, a folder or a hub id)."""

import streamlit as st
import torch

from app_ui.cache import access_policy, cached_model, mark_model_loaded, model_loaded
from calib_core import assets
from calib_core.errors import CalibLabError
from calib_core.models import AUTO_DTYPE, DTYPE_CHOICES, resolve_dtype


def show_license(alias: str) -> None:
    bundled = assets.BUNDLED[alias]
    try:
        terms = assets.license_file(alias)
    except CalibLabError as exc:  # its package is not installed
        st.warning(str(exc))
        return
    if terms is None:
        st.caption(f"Licence: {bundled.license}.")
        return
    st.caption(f"Licence: {bundled.license}. Its terms come with the model and with every pruned model saved "
               "from it.")
    st.download_button(f"Terms of use ({terms.name})", terms.read_bytes(), terms.name, on_click="ignore",
                       icon=":material/gavel:")


st.title("Model")
with st.expander("What is pruned"):
    st.markdown(r"""Every Linear (or GPT-2 Conv1D) inside the decoder blocks: attention q/k/v/o and the MLP
projections. Embeddings and the LM head are never pruned. Sparsity of a matrix $W$ is
$s = \#\{W_{ij} = 0\} / \#W$; N:M means every group of M consecutive inputs of a row keeps M - N weights.
Pruning is layer-wise: block $l$ sees the calibration activations $X_l$ produced by the blocks before it
and chooses its mask to keep $\|W_l X_l - \hat W_l X_l\|$ small. Memory needed is roughly weights +
$2 \cdot n \cdot L \cdot d$ block inputs/outputs (n samples of L tokens, hidden size d) + per-method statistics
(SparseGPT: one $d_{in} \times d_{in}$ Hessian per Linear).""")
kind = st.radio("Source", ["Bundled (offline)", "Hub id", "Local folder"], horizontal=True)
if kind == "Bundled (offline)":
    spec = st.selectbox("Bundled model", list(assets.BUNDLED), format_func=lambda a: f"{assets.BUNDLED[a].title} ({a})",
                        help="Installed from registry packages; converted to safetensors on first use.")
    st.caption(assets.BUNDLED[spec].caveat)
    show_license(spec)
else:
    shared = access_policy().shared
    spec = st.text_input("Hub id" if kind == "Hub id" else "Folder",
                         placeholder="HuggingFaceTB/SmolLM2-135M" if kind == "Hub id" else "/path/to/model",
                         help=f"This app is shared: folders inside {access_policy().workspace} only."
                         if shared and kind == "Local folder" else None)
col1, col2, col3, col4 = st.columns(4)
dtype = col1.selectbox("dtype", DTYPE_CHOICES, format_func=lambda d: f"auto ({resolve_dtype(d)} here)" if d == AUTO_DTYPE else d,
                       help="auto: bfloat16 on CPUs with native bf16 arithmetic (about 2.8x faster than float32 for "
                            "Wanda with 99.6% of the same kept weights), float16 on CUDA, float32 otherwise. Every "
                            "run's record states the dtype that ran.")
devices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
device = col2.selectbox("Compute device", devices, help="auto: CUDA when present. Weights stay in CPU memory; "
                        "each block visits the device for its turn when pruning.")
quantization = col3.selectbox("Quantized load (generation and scoring only)", [None, "8bit", "4bit"])
trust = False
if access_policy().allows_remote_code:
    trust = col4.checkbox("Allow the repository's own code (trust_remote_code)")
else:
    col4.caption("Repository code (trust_remote_code) never runs in a shared app.")
if trust:
    st.warning("Remote code runs with your permissions. Read it before enabling this.")
if st.button("Load", type="primary", disabled=not spec):
    try:
        with st.spinner("Loading (the first use converts the bundled GGUF once)..."):
            cached_model(spec, dtype, quantization, trust)
        mark_model_loaded()
        st.session_state.model_spec = spec
        st.session_state.model_options = {"dtype": dtype, "quantization": quantization, "trust_remote_code": trust}
        st.session_state.device = device
    except CalibLabError as exc:
        st.error(str(exc))

options = st.session_state.model_options
if model_loaded():
    from calib_core.devices import resolve_device
    from calib_core.models import describe_model
    from calib_core.prune.memory import estimate_memory
    from calib_core.prune.methods import METHODS, statistics_needed

    loaded = cached_model(st.session_state.model_spec, **options)
    info = describe_model(loaded.model)
    for note in loaded.notes:
        st.caption(note)
    cols = st.columns(4)
    cols[0].metric("Family", info["family"])
    cols[1].metric("Blocks", info["blocks"])
    cols[2].metric("Parameters", f"{info['parameters'] / 1e6:.1f} M")
    cols[3].metric("Prunable", f"{info['prunable_parameters'] / 1e6:.1f} M")
    st.write("Prunable modules per block:", ", ".join(info["prunable_modules_per_block"]))
    n, L = st.columns(2)
    nsamples = n.number_input("nsamples", 1, 2048, 32)
    seqlen = L.number_input("seqlen", 8, 8192, 512)
    by_needs: dict = {}  # one estimate per kind of statistics the methods collect
    for name in METHODS:
        by_needs.setdefault(statistics_needed(name), []).append(name)
    for needs, names in by_needs.items():
        estimate = estimate_memory(loaded.model, nsamples, seqlen, needs, resolve_device(st.session_state.device))
        st.write(f"Memory estimate for {', '.join(names)}: {estimate.describe()}")
else:
    st.caption("No model loaded yet: pages work lazily and load it when they need it.")
