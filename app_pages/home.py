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

# The demo needs torch and the job machinery (seconds to import on a first visit): imported once the page's
# text is on screen, so the first page a newcomer sees appears at once.
from calib_core.experiments.demo import demo_grid, demo_links  # noqa: E402
from calib_core.jobs import manager, tasks  # noqa: E402
from calib_core.jobs.progress import sweep_progress  # noqa: E402
from calib_core.runs import RunStore  # noqa: E402
from app_ui.live import live_view, page_kind  # noqa: E402

KIND = page_kind(__file__)
st.subheader("The two-minute demo")
st.markdown("Prune the bundled model with Wanda at 50% twice: once calibrated on Wikipedia text, once on code, with "
            "magnitude pruning (no data) as the reference. Then compare their perplexities on wiki and code, and look "
            "inside the layer where the two calibration sets pruned most differently. About 1 minute on a 2-core CPU "
            "(8 x 128-token windows, 4 evaluation windows per domain); a finished demo opens at once.")
grid = demo_grid(device=st.session_state.device)
running = manager().get(st.session_state.get("demo_job"))
if st.button("Run the two-minute demo", type="primary", icon=":material/school:",
             disabled=bool(running and not running.done)):
    st.session_state.demo_job = manager().submit("classroom demo", tasks.demo, grid, device=grid.device, kind=KIND).id


def demo_progress(job):
    if not job.done:
        progress = sweep_progress(job.events, job.status)
        st.progress(progress.fraction, progress.text)
    elif job.status != "finished":
        st.error(f"{job.status}: {job.error}")


live_view("demo_job", KIND, demo_progress)
links = demo_links(grid, RunStore())
if links:
    c1, c2 = st.columns(2)
    c1.page_link("app_pages/results.py", label="1. Perplexity: wiki vs code calibration, and magnitude",
                 icon=":material/table_chart:", query_params=links["results"])
    c2.page_link("app_pages/inside.py", label=f"2. Inside block {links['inside']['block']} "
                 f"{links['inside']['module']}: why the masks differ", icon=":material/biotech:",
                 query_params=links["inside"])
