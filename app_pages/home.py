"""Start: the story the lab tells (the seed paper's questions), the path through the pages, one-click presets
that fill the forms with a time estimate, and the two-minute demo."""

import streamlit as st

from calib_core import assets

st.title("Calibration Lab")
st.write(
    "Pruning methods such as Wanda and SparseGPT decide which weights to remove from the activations that a few "
    "calibration texts produce. This lab shows how much that choice of text matters, on your model and your CPU "
    "or GPU, with the seed noise stated."
)
st.info(f"Default model: `{assets.DEFAULT_MODEL}` (bundled, offline). {assets.BUNDLED[assets.DEFAULT_MODEL].caveat}")

st.subheader("The path")
PATH = [
    ("app_pages/model.py", "1. Model", ":material/memory:", "pick a causal LM (bundled, a folder or a hub id)"),
    ("app_pages/calibration.py", "2. Calibration data", ":material/dataset:",
     "build calibration text from corpora, an upload, pasted text, or text the model writes itself"),
    ("app_pages/similarity.py", "3. Similarity", ":material/compare:",
     "see how training-like each set is (Min-K%++)"),
    ("app_pages/prune.py", "4. Prune", ":material/content_cut:",
     "prune with a method and sparsity, per-block charts live"),
    ("app_pages/results.py", "5. Results", ":material/table_chart:",
     "compare runs: perplexity, mask agreement, what differs"),
]
for page, label, icon, does in PATH:
    c1, c2 = st.columns([1, 3])
    c1.page_link(page, label=label, icon=icon)
    c2.caption(does)

with st.expander("Why calibration data matters"):
    st.markdown(
        "Calibrated pruning methods (Wanda, SparseGPT, DSnoT, OWL) decide which weights to remove from the "
        "activations $X$ that calibration text produces. Different text gives different $X$, hence "
        "different masks. Ji et al. (ICLR 2025) found the effect grows with sparsity, and that text close "
        "to the model's pretraining data (high Min-K%++) prunes best, even text the model writes itself.\n\n"
        "Example: Wanda scores each weight by $S_{ij} = |W_{ij}| \\cdot \\|X_j\\|_2$, where $\\|X_j\\|_2$ is the norm "
        "of input feature $j$ over all calibration tokens. Change the text and the norms change, so the weights "
        "that survive change too (the Results page measures by how much: mask agreement)."
    )

# The presets' estimates and the demo need the run store, torch and the job machinery (seconds to import on a
# first visit): imported once the page's text is on screen, so the first page a newcomer sees appears at once.
from app_ui.live import live_view, page_kind  # noqa: E402
from calib_core.experiments.demo import demo_grid, demo_links  # noqa: E402
from calib_core.experiments.presets import PRESETS, SIMILARITY, SWEEPS  # noqa: E402
from calib_core.jobs import manager, tasks  # noqa: E402
from calib_core.jobs.progress import sweep_progress  # noqa: E402
from calib_core.models import resolve_dtype  # noqa: E402
from calib_core.runs import RunStore  # noqa: E402
from calib_core.runs.estimate import estimate_sweep  # noqa: E402

KIND = page_kind(__file__)
store = RunStore()
runs = store.run_costs(st.session_state.model_spec)

st.subheader("The paper's questions, one click each")
st.caption("Each button fills the form of the page that answers it; nothing runs until you start it there.")
PRESET_STATE = {SWEEPS: "sweep_preset", SIMILARITY: "similarity_preset"}
for preset in PRESETS:
    with st.container(border=True):
        c1, c2 = st.columns([3, 1])
        c1.markdown(f"**{preset.question}**  \n{preset.experiment}")
        if preset.page == SWEEPS:
            grid = preset.grid(st.session_state.model_spec,
                               resolve_dtype(st.session_state.model_options["dtype"], st.session_state.device),
                               st.session_state.device)
            c1.caption(estimate_sweep(grid, runs, store.finished_points(grid.name)).describe())
        if c2.button("Fill the form", key=f"preset-{preset.key}", icon=":material/edit_note:"):
            st.session_state[PRESET_STATE.get(preset.page, "selfgen_preset")] = dict(preset.form)
            st.switch_page(preset.page)

st.subheader("The two-minute demo")
st.markdown("Prune the bundled model with Wanda at 50% twice: once calibrated on Wikipedia text, once on code, with "
            "magnitude pruning (no data) as the reference. Then compare their perplexities on wiki and code, and look "
            "inside the layer where the two calibration sets pruned most differently (8 x 128-token windows, 4 "
            "evaluation windows per domain); a finished demo opens at once.")
grid = demo_grid(device=st.session_state.device)
estimate = estimate_sweep(grid, store.run_costs(grid.model), store.finished_points(grid.name))
st.caption(estimate.describe() if estimate.seconds is not None else
           "About 1 minute on a 2-core CPU (48 s measured on ours, bench/inside_bench.py); this machine has no earlier "
           "run of the kind to estimate from.")
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
links = demo_links(grid, store)
if links:
    c1, c2 = st.columns(2)
    c1.page_link("app_pages/results.py", label="1. Perplexity: wiki vs code calibration, and magnitude",
                 icon=":material/table_chart:", query_params=links["results"])
    c2.page_link("app_pages/inside.py", label=f"2. Inside block {links['inside']['block']} "
                 f"{links['inside']['module']}: why the masks differ", icon=":material/biotech:",
                 query_params=links["inside"])
