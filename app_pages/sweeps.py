"""Sweeps: a grid of runs (sources x strategies x methods x sparsities x seeds) with its spread and t-tests."""

import time

import streamlit as st
import yaml

from app_ui.cache import access_policy
from app_ui.forms import whole_numbers
from app_ui.live import live_view, page_kind
from calib_core.data import sets
from calib_core.data.sources import BUILTIN_SOURCES, MODES
from calib_core.data.strategies import STRATEGIES
from calib_core.errors import CalibLabError, NotEnoughDataError
from calib_core.experiments.stats import PPL, spread_by_setting, summarize, sweep_frame, welch_test
from calib_core.experiments.sweep_figures import export_sweep, sweep_figures
from calib_core.experiments.sweeps import SweepGrid
from calib_core.jobs import manager, tasks
from calib_core.jobs.progress import sweep_progress
from calib_core.models import resolve_dtype
from calib_core.prune.methods import METHODS
from calib_core.runs import RunStore
from calib_core.runs.estimate import estimate_sweep

KIND = page_kind(__file__)  # the jobs this page starts and follows

BUILTIN = list(BUILTIN_SOURCES)

st.title("Sweeps")
with st.expander("Why sweeps, and how to read them"):
    st.markdown(
        "One pruning run tells you little about a calibration source: another seed (another random draw of "
        "calibration samples) can move perplexity as much as switching sources. A sweep repeats every "
        "(source, method, sparsity, sample count) over several seeds, so each bar is a mean with its spread.\n\n"
        "- **Bars** show the mean over seeds with ±1 std error bars; the dashed line is magnitude pruning "
        "(no calibration data) at the same sparsity.\n"
        "- **Spread** = worst source mean − best source mean, here relative to the best: the paper finds it "
        "grows with sparsity and is largest for N:M patterns.\n"
        "- **Welch's t-test** compares two sources without assuming equal variances: "
        "$t = (\\bar a - \\bar b) / \\sqrt{s_a^2/n_a + s_b^2/n_b}$. A small p (< 0.05) means the difference is "
        "unlikely to be seed noise alone; with 5 seeds only large effects reach it.\n"
        "- `ppl` is the geometric mean of the held-out perplexities of every eval source.")

store = RunStore()
grid_tab, results_tab = st.tabs(["New sweep", "Sweep results"])

with grid_tab:
    uploaded = st.file_uploader("Grid file (optional)", type=["yaml", "yml", "json"],
                                help="Same format as `python -m calib_core sweep GRID.yaml`")
    if uploaded is not None:
        try:
            st.session_state.sweep_grid = access_policy().grid(
                SweepGrid.from_dict(yaml.safe_load(uploaded.getvalue().decode("utf-8"))))
            st.success(f"Loaded grid '{st.session_state.sweep_grid.name}'.")
        except (CalibLabError, yaml.YAMLError, UnicodeDecodeError) as exc:
            st.error(f"Not a valid grid file: {exc}")
    # A Start page preset fills the form (kept while the session lasts, so a submit reads the same widgets).
    preset = st.session_state.get("sweep_preset") or {}
    if preset:
        st.info(f"Filled in by the Start page's preset '{preset['name']}': check it, then start the sweep.")
    with st.form("sweep_form"):
        name = st.text_input("Sweep name", preset.get("name", f"sweep-{time.strftime('%m%d-%H%M')}"),
                             help="Runs are tagged with it; rerunning the same name resumes.")
        c1, c2 = st.columns(2)
        sources = c1.multiselect("Calibration sources", BUILTIN + [f"set:{s}" for s in sets.list_sets()],
                                 preset.get("calibration", ["builtin:wiki", "builtin:news"]))
        methods = c2.multiselect("Methods", list(METHODS), preset.get("methods", ["magnitude", "wanda"]))
        strategies = c1.multiselect("Calibration strategies", list(STRATEGIES), ["random"],
                                    help="How each point's windows are chosen (default settings; a grid file can set "
                                         "them). " + "; ".join(f"{s.name}: {s.summary}" for s in STRATEGIES.values()))
        settings = c1.multiselect("Sparsities / patterns", ["0.5", "0.6", "0.7", "0.8", "4:8", "2:4"],
                                  [str(s) for s in preset.get("sparsities", ["0.5", "0.6"])])
        nsamples = c2.text_input("Calibration samples (comma-separated)",
                                 ", ".join(str(n) for n in preset.get("nsamples", [8])))
        seeds = c1.number_input("Seeds", 1, 50, len(preset.get("seeds", range(3))))
        seqlen = c2.number_input("Tokens per sample", 16, 4096, preset.get("seqlen", 256), step=16)
        evals = c1.multiselect("Evaluate on (held-out)", BUILTIN, preset.get("eval", ["builtin:wiki"]))
        windows = c2.number_input("Eval windows per source", 1, 256, preset.get("eval_windows", 4))
        mode = c1.selectbox("Sampling mode", list(MODES), list(MODES).index(preset.get("mode", "document")),
                            help="; ".join(f"{name}: {text}" for name, text in MODES.items()))
        submitted = st.form_submit_button("Start sweep", type="primary")
    if submitted:
        try:
            grid = SweepGrid.from_dict(dict(
                name=name, model=st.session_state.model_spec, calibration=sources, strategies=strategies or ["random"],
                methods=methods,
                sparsities=[s if ":" in s else float(s) for s in settings], seqlen=int(seqlen),
                nsamples=whole_numbers("Calibration samples", nsamples), seeds=list(range(int(seeds))),
                eval=evals, eval_windows=int(windows), mode=mode,
                dtype=resolve_dtype(st.session_state.model_options["dtype"], st.session_state.device),
                device=st.session_state.device))
            st.session_state.sweep_grid = access_policy().grid(grid)
        except (CalibLabError, ValueError) as exc:
            st.error(f"Invalid sweep: {exc}")
    grid = st.session_state.get("sweep_grid")
    if grid is not None:
        done = store.finished_points(grid.name)
        points = grid.points()
        st.markdown(f"Grid **{grid.name}**: {len(points)} points, {sum(p.key in done for p in points)} already finished.")
        st.caption(estimate_sweep(grid, store.run_costs(grid.model), done).describe())
        running = manager().get(st.session_state.get("sweep_job"))
        if st.button("Run this grid", disabled=bool(running and not running.done)):
            job = manager().submit(f"sweep {grid.name}", tasks.sweep, grid, device=grid.device, kind=KIND)
            st.session_state.sweep_job = job.id

    def draw_sweep(job):
        progress = sweep_progress(job.events, job.status)
        st.progress(progress.fraction, progress.text)
        if not job.done and st.button("Cancel sweep"):
            job.cancel()
        if job.status == "finished":
            summary = job.result
            st.success(f"{summary.ran} ran, {summary.skipped} skipped, {len(summary.failed)} failed.")
            for failure in summary.failed:
                st.warning(failure)
        elif job.status in ("failed", "cancelled"):
            st.error(f"{job.status}: {job.error}")

    live_view("sweep_job", KIND, draw_sweep)

with results_tab:
    names = store.sweep_names()
    if not names:
        st.info("No sweep has finished points yet.")
        st.stop()
    chosen = st.selectbox("Sweep", names, index=len(names) - 1)
    try:
        frame = sweep_frame(store, chosen)
    except NotEnoughDataError as exc:
        st.info(str(exc))
        st.stop()
    metrics = [PPL] + [c for c in frame.columns if c.startswith(("ppl ", "cloze "))]
    c1, c2, c3 = st.columns(3)
    metric = c1.selectbox("Metric", metrics)
    calibrated = sorted(m for m in frame["method"].unique() if m != "magnitude") or ["magnitude"]
    method = c2.selectbox("Method", calibrated)
    data = frame[frame["method"] == method]
    settings = list(spread_by_setting(frame, metric, method)["setting"]) or sorted(data["setting"].unique())
    setting = c3.selectbox("Setting (violins, samples curve, t-test)", settings)
    counts = sorted(data["nsamples"].unique())
    n_bars = st.select_slider("Calibration samples (bars)", counts, counts[-1]) if len(counts) > 1 else counts[0]
    relative = st.toggle("Spread relative to the best source", True,
                         help="Perplexities differ by orders of magnitude between settings; relative spread compares them.")
    figures, missing = sweep_figures(frame, method, setting, metric, n_bars, relative)
    for reason in missing:
        st.caption(reason)
    if "bars" in figures:
        st.plotly_chart(figures["bars"], width="stretch")
    left, right = st.columns(2)
    for column, key in ((left, "spread"), (right, "violins")):
        if key in figures:
            column.plotly_chart(figures[key], width="stretch")
    if "nsamples" in figures:
        st.plotly_chart(figures["nsamples"], width="stretch")
    if "transfer" in figures:
        st.plotly_chart(figures["transfer"], width="stretch")

    st.subheader("Is the difference beyond seed noise?")
    here = data[(data["setting"] == setting) & (data["nsamples"] == n_bars)]
    sources = sorted(here["calibration"].unique())
    if len(sources) >= 2:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Source A", sources, 0)
        b = c2.selectbox("Source B", sources, 1)
        try:
            st.markdown(welch_test(here, a, b, metric).describe())
        except NotEnoughDataError as exc:
            st.warning(str(exc))
    st.dataframe(summarize(frame, ["method", "setting", "calibration", "nsamples"], metric), hide_index=True,
                 width="stretch")

    st.subheader("Export")
    kind = st.radio("Format", ["html", "png"], horizontal=True, help="PNG needs kaleido and a Chrome/Chromium.")
    if st.button("Prepare files"):
        folder = store.path.parent / "exports" / chosen
        written, notes = export_sweep(frame, folder, [method], (kind,), metric, setting=setting, nsamples=n_bars,
                                      relative=relative)  # the figures as shown, and the summary
        for note in notes:
            (st.error if note.startswith("PNG skipped") else st.caption)(note)
        for path in written:
            st.download_button(f"Download {path.name}", path.read_bytes(), path.name, key=f"dl-{path.name}")
