"""Prune: prune the model with a method and sparsity in a background job, with live charts."""

from dataclasses import replace

import streamlit as st

from app_ui.cache import access_policy, cached_model, mark_model_loaded, model_loaded
from app_ui.charts import show_chart
from app_ui.forms import INVALID, any_invalid, bounded_number, calibration_source
from app_ui.linked import form_from_address, form_to_address
from app_ui.live import figures_of, live_view, page_kind
from app_ui.strategy import strategy_inputs
from calib_core.data.sources import BUILTIN_SOURCES, MODES
from calib_core.data.strategies import describe_strategy
from calib_core.devices import resolve_device
from calib_core.errors import CalibLabError
from calib_core.experiments.run_figures import live_prune_charts
from calib_core.jobs import manager, tasks
from calib_core.jobs.progress import run_progress
from calib_core.metrics.perplexity import PROTOCOLS
from calib_core.models import resolve_dtype
from calib_core.prune import PruneConfig
from calib_core.prune.memory import estimate_memory
from calib_core.prune.methods import ENGINE_OPTIONS, METHODS, options_of, statistics_needed
from calib_core.runs import RunStore
from calib_core.runs.estimate import estimate_run
from calib_core.runs.spec import EvalSpec, RunSpec, check_outputs

KIND = page_kind(__file__)  # the jobs this page starts and follows

st.title("Prune")
with st.expander("How the methods choose weights"):
    st.markdown("\n".join(f"- **{m.name}**: {m.explain}" for m in METHODS.values()))

# Streamlit forgets a page's widgets when the user leaves it (kept in the session) and a session ends with a
# reload or a server restart (kept in the page's address, which also makes the form shareable).
TEXT_SETTINGS = {"method", "base", "pattern", "mode", "separator", "ppl_protocol", "save", "strategy", "calib"}
if "prune_form" not in st.session_state:
    st.session_state.prune_form = form_from_address(TEXT_SETTINGS)
    if "calib" in st.session_state.prune_form:
        st.session_state.calib_source = st.session_state.prune_form["calib"]
last = st.session_state.prune_form
DEFAULTS = PruneConfig()
PATTERNS = ["unstructured", "2:4", "4:8"]
EVAL_SOURCES = BUILTIN_SOURCES
# Labels for the concat-mode separators worth offering (a text box cannot show a blank line).
SEPARATORS = {"blank line (\\n\\n)": "\n\n", "space (the authors' Wanda code for self-generated data)": " ",
              "newline (\\n)": "\n"}


def choice(column, label: str, options: list, key: str, default, **kwargs):
    """A selectbox that starts on the last submitted value (or `default`)."""
    value = last.get(key, default)
    return column.selectbox(label, options, options.index(value) if value in options else 0, **kwargs)


def option_inputs(options) -> dict:
    """One widget per registry option, four to a row, with the option's label, help, kind and bounds;
    a number outside its bounds is INVALID (and said under its field)."""
    chosen = {}
    for start in range(0, len(options), 4):
        for option, column in zip(options[start:start + 4], st.columns(4)):
            value = last.get(option.field, option.default)
            if option.choices:
                chosen[option.field] = choice(column, option.title, list(option.choices), option.field,
                                              option.default, help=option.help)
                continue
            whole = option.kind is int
            auto = f"auto: {option.auto[0]:g}, or {option.auto[1]:g} for N:M" if option.auto else None
            chosen[option.field] = bounded_number(
                column, option.title, int(option.low) if whole else option.low,
                int(option.high) if whole else option.high, value, optional=option.auto is not None,
                help=f"{option.help} ({option.bounds()})", placeholder=auto,
                **({"step": 1} if whole else {"format": "%.3f"}))
    return chosen


with st.container(border=True):
    c1, c2, c3, c4 = st.columns(4)
    method = choice(c1, "Method", list(METHODS), "method", DEFAULTS.method,
                    help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
    bases = list(METHODS[method].bases)
    base = choice(c2, "Base", bases or ["(none)"], "base", bases[0] if bases else "(none)", disabled=not bases,
                  help=f"What {method} builds on" if bases else f"{method} is a mask method itself")
    base = base if bases else None
    pattern = choice(c3, "Pattern", PATTERNS, "pattern", DEFAULTS.pattern)
    structured = ":" in pattern
    sparsity = bounded_number(c4, "Sparsity (fraction of weights zeroed)", 0.0, 0.99,
                              0.5 if structured else last.get("sparsity", DEFAULTS.sparsity), step=0.05,
                              format="%.2f", disabled=structured,
                              help=f"{pattern} keeps {pattern.split(':')[0]} of every {pattern.split(':')[1]} weights: "
                                   "50% by its pattern." if structured else "Type a value or step by 0.05.")
    c5, c6, c7, c8 = st.columns(4)
    calib = calibration_source(c5, st.session_state.calib_source, "prune")
    if calib is not INVALID:
        st.session_state.calib_source = calib  # the sidebar follows the form
    nsamples = bounded_number(c6, "nsamples", 1, 2048, last.get("nsamples", 8), step=1)
    seqlen = bounded_number(c7, "seqlen", 8, 8192, last.get("seqlen", 256), step=1)
    seed = bounded_number(c8, "seed", 0, 10**6, last.get("seed", 0), step=1)
    strategy, strategy_options = strategy_inputs(st, "prune")
    c9, c10 = st.columns(2)
    evals = c9.multiselect("Perplexity on", EVAL_SOURCES, last.get("evals", ["builtin:wiki"]))
    eval_windows = bounded_number(c10, "Eval windows per source", 1, 10000, last.get("eval_windows", 8), step=1)
    method_options = option_inputs(options_of(method, base))  # the chosen method's and its base's
    with st.expander("More settings"):
        engine_options = option_inputs(ENGINE_OPTIONS)
        e1, e2, e3 = st.columns(3)
        mode = choice(e1, "Sampling mode", list(MODES), "mode", "document",
                      help="; ".join(f"{name}: {text}" for name, text in MODES.items()))
        separator = choice(e2, "Concat separator", list(SEPARATORS), "separator", next(iter(SEPARATORS)),
                           disabled=mode != "concat")
        ppl_protocol = choice(e3, "Perplexity protocol", list(PROTOCOLS), "ppl_protocol", "heldout",
                              help="; ".join(f"{name}: {text}" for name, text in PROTOCOLS.items()))
        f1, f2 = st.columns([3, 1])
        save = f1.text_input("Save the pruned model to folder (optional)", last.get("save", ""),
                             help=f"This app is shared: a folder inside {access_policy().workspace}."
                             if access_policy().shared else "Written whole when the run ends, report included.")
        overwrite = f2.checkbox("Replace a non-empty folder", help="Its files are removed.")
        stream = st.checkbox("Stream the model's blocks from disk", last.get("stream", False),
                             help="For a model larger than memory: each decoder block is read from its safetensors "
                                  "files for its turn and written out after it. Chosen by itself, and said, when "
                                  "the weights do not fit in free memory.")
    options = method_options | engine_options
    numbers = dict(nsamples=nsamples, seqlen=seqlen, seed=seed, eval_windows=eval_windows, **options)
    if not structured:
        numbers["sparsity"] = sparsity
    invalid = any_invalid(*numbers.values(), strategy_options, calib)
    kept = {key: value for key, value in numbers.items() if not any_invalid(value)}  # a bad entry is not remembered
    st.session_state.prune_form = last | dict(
        method=method, base=base, pattern=pattern, evals=evals, mode=mode, separator=separator,
        ppl_protocol=ppl_protocol, save=save, stream=stream, **kept, **({} if calib is INVALID else {"calib": calib}))
    form_to_address(st.session_state.prune_form, TEXT_SETTINGS)
    if not invalid and (model_loaded() or st.toggle("Show the memory estimate (loads the model)")):
        try:
            loaded = cached_model(st.session_state.model_spec, **st.session_state.model_options)
            mark_model_loaded()
            estimate = estimate_memory(loaded.model, int(nsamples), int(seqlen), statistics_needed(method, base),
                                       resolve_device(st.session_state.device))
            st.caption(f"Memory estimate: {estimate.describe()}")
        except CalibLabError as exc:
            st.error(str(exc))
    def form_spec() -> RunSpec:
        config = PruneConfig(method=method, base=base, pattern=pattern, sparsity=0.5 if structured else sparsity,
                             device=st.session_state.device, **options).resolved()
        return RunSpec(
            model=st.session_state.model_spec, dtype=st.session_state.model_options["dtype"],
            trust_remote_code=st.session_state.model_options["trust_remote_code"], calib=calib,
            nsamples=int(nsamples), seqlen=int(seqlen), seed=int(seed), mode=mode,
            concat_separator=SEPARATORS[separator], strategy=strategy, strategy_options=strategy_options,
            config=config, save=save or None, overwrite=overwrite, stream=stream,
            evaluation=EvalSpec(evals, windows=int(eval_windows), protocol=ppl_protocol))

    if not invalid:
        try:
            planned = form_spec()
            planned = replace(planned, dtype=resolve_dtype(planned.dtype, planned.config.device))
            st.caption(estimate_run(planned, RunStore().run_costs(planned.model)).describe())
        except CalibLabError:
            pass  # said when the run is started
    submitted = st.button("Start pruning", type="primary", disabled=invalid,
                          help="Fix the fields marked in red first." if invalid else None)

if submitted:
    try:
        spec = access_policy().spec(form_spec())  # a shared app confines paths and sizes
        config = spec.config
        check_outputs(spec)  # a bad save folder fails now, not after the run
        chosen_by = "" if strategy == "random" else f" by {describe_strategy(strategy, strategy_options)}"
        label = f"{method} {pattern if ':' in pattern else sparsity} on {calib}{chosen_by}"
        st.session_state.prune_job = manager().submit(label, tasks.prune, spec, kind=KIND,
                                                      device=config.device).id
    except CalibLabError as exc:
        st.error(str(exc))


def draw_prune(job):
    progress = run_progress(job.events, job.status)
    st.progress(progress.fraction, progress.text)
    if not job.done and st.button("Cancel run"):
        job.cancel()
    for e in job.events_of("pipeline"):
        if e.stage in ("estimate", "ppl", "saved", "load") or e.message.startswith("note: "):
            st.caption(e.message)
    if job.status == "finished":
        show_outcome(job.result)
    elif job.status == "cancelled":
        st.warning(CANCELLED)
    elif job.status == "failed":
        st.error(f"failed: {job.error}")


# Each job loads the model in its own process, which ends with it: nothing partial is kept.
CANCELLED = ("Cancelled. The run is listed as cancelled on the Results page; nothing was saved and its masks were "
             "discarded. The model on disk is untouched: the next run loads it afresh.")


def draw_prune_charts(job):
    charts = figures_of(job, live_prune_charts)
    if job.done and charts["sparsity"].data.empty:  # it ended before a block did: nothing to draw
        return
    left, right = st.columns(2)
    for container, name in ((left, "sparsity"), (right, "seconds"), (st, "recon_error")):
        show_chart(container, charts[name], name, exports=job.done)
    if "owl_outliers" in charts:  # last: the others keep their place on the page
        show_chart(st, charts["owl_outliers"], "owl_outliers", exports=job.done)


def show_outcome(result: dict) -> None:
    for details in (result.get("method_details") or {}).values():
        if "summary" in details:  # what the method's own record says ran (older records: none)
            st.caption(details["summary"])
    for p in result["perplexity"]:
        st.metric(f"Perplexity on {p['source']}", f"{p['ppl']:.2f}", help=p["protocol"])
    st.success(f"Recorded as run {result['run_id']}. Compare it on the Results page.")
    if result.get("masks"):
        st.page_link("app_pages/inside.py", label="Inside a layer: what this calibration data changed",
                     icon=":material/biotech:", query_params={"a": str(result["run_id"])})


st.toggle("Live charts", value=True, key="live_charts",
          help="Redraw the charts while a run goes: about every 5 s with one tab open, less often in each tab when "
               "several watch. A redraw costs the browser CPU time; on a small machine running both the job and "
               "the browsers, turning this off leaves the job a little more.")
live_view("prune_job", KIND, draw_prune, empty="Start a run above; it keeps going while you visit other pages.",
          charts=draw_prune_charts, live_charts=st.session_state.live_charts, show_last=True)
