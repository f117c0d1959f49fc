"""Start: what the lab shows and where to begin."""

import streamlit as st

from calib_core import assets

st.title("Calibration Lab")
st.write(
    "How calibration data shapes post-training pruning of large language models. Pick a model, build "
    "calibration text, see how training-like it is, prune layer by layer and compare runs."
)
st.info(f"Default model: `{assets.DEFAULT_MODEL}` (bundled, offline). {assets.BUNDLED[assets.DEFAULT_MODEL].caveat}")
with st.expander("Why calibration data matters"):
    st.markdown(
        "Calibrated pruning methods (Wanda, SparseGPT, DSnoT, OWL) decide which weights to remove from "
        "the activations $X$ that calibration text produces. Different text gives different $X$, hence "
        "different masks. Ji et al. (ICLR 2025) found the effect grows with sparsity, and that text close "
        "to the model's pretraining data (high Min-K%++) prunes best, even text the model writes itself.\n\n"
        "Example: Wanda scores each weight by $S_{ij} = |W_{ij}| \\cdot \\|X_j\\|_2$, where $\\|X_j\\|_2$ is the norm "
        "of input feature $j$ over all calibration tokens. Change the text and the norms change, so the weights "
        "that survive change too (the Results page measures by how much: mask agreement)."
    )
st.page_link("app_pages/prune.py", label="Go straight to a first prune", icon=":material/content_cut:")
