"""Results: compare stored runs (perplexity, per-block charts, mask agreement) and remake or save one."""

import json
from dataclasses import replace

import plotly.express as px
import streamlit as st

from app_ui.cache import access_policy
from app_ui.charts import show_chart
from app_ui.linked import linked_choice, linked_choices
from app_ui.live import LIVE_KINDS, live_view, page_kind
from calib_core.errors import CalibLabError
from calib_core.experiments.run_figures import (
    BLOCK_METRICS,
    Chart,
    overlay_chart,
    perplexity_chart,
    run_label,
    similarity_vs_perplexity_chart,
    ticks_at,
    whole_blocks,
)
from calib_core.experiments.stats import dense_baseline, evaluation_of, similarity_vs_perplexity
from calib_core.jobs import manager, tasks
from calib_core.metrics.agreement import block_agreement, mask_agreement, overall_jaccard
from calib_core.prune import PruneConfig
from calib_core.runs import RunStore, runs_table
from calib_core.runs.diff import settings_diff
from calib_core.runs.pipeline import DENSE
from calib_core.runs.spec import EvalSpec, RunSpec, check_outputs, reproduce_command, spec_of_record

KIND = page_kind(__file__)  # the jobs this page starts and follows

st.title("Results")
with st.expander("Reading these charts"):
    st.markdown("Each run is one (model, calibration set, method, sparsity, seed). Calibration data matters "
                "when runs that differ only in their calibration source differ by more than seed noise; the "
                "effect grows with sparsity and is largest for N:M patterns. The dashed line is the dense "
                "(unpruned) model on the same evaluation.")
store = RunStore()
runs = store.list()
if store.read_only_reason:
    st.warning(f"The run store `{store.path}` is read-only ({store.read_only_reason}): the runs below are "
               "listed, but new runs cannot be recorded until it can be written (free disk space, or fix "
               "the file's permissions).")
if not runs:
    st.info("No runs yet. Start one on the Prune page or with `python -m calib_core prune`.")
    st.stop()


def ids_from_link(name: str) -> list[int]:
    """Run ids named by the page's link (?runs=3,5 or ?run=3), ignoring what is not a known run."""
    known = {r["id"] for r in runs}
    raw = st.query_params.get(name, "")
    return [int(x) for x in raw.split(",") if x.strip().isdigit() and int(x) in known]


by_id = {r["id"]: r for r in runs}
table = runs_table(runs)
table["label"] = table.id.map(lambda i: run_label(by_id[i]))
table["hidden"] = table.id.map(lambda i: by_id[i]["hidden"])
c1, c2, c3 = st.columns([2, 2, 1])
all_methods = sorted(table.method.dropna().unique())
methods = linked_choices(c1, "Methods", all_methods, "methods", all_methods)
statuses = linked_choices(c2, "Status", sorted(table.status.unique()), "status",
                          ["finished"] if "finished" in set(table.status) else [])
show_hidden = c3.toggle("Show hidden runs", key="show_hidden", help="Runs you hid stay in the store.")
view = table[table.method.isin(methods) & table.status.isin(statuses) & (show_hidden | ~table.hidden)]
ppl_first = [c for c in view.columns if c.startswith("ppl ")]
st.dataframe(view, width="stretch", hide_index=True,  # what a run measured next to what it was
             column_order=["id", "method", "sparsity", "calibration", "strategy", *ppl_first, "tags", "origin",
                           "status", "nsamples", "seqlen", "seed", "overall_sparsity", "prune_s", "model", "base",
                           "created"] + (["hidden"] if show_hidden else []))
st.download_button("Download table (CSV)", view.to_csv(index=False), "runs.csv")


def manage_runs() -> None:
    """Tag, hide or delete runs: a deletion is confirmed first and says what it removed."""
    with st.expander("Tag, hide or delete runs"):
        chosen = st.multiselect("Runs to change", list(view.id), format_func=lambda i: run_label(by_id[i]),
                                key="manage_runs")
        tags = st.text_input("Tags (comma-separated; replaces the runs' tags)", key="manage_tags")
        b1, b2, b3 = st.columns(3)
        message = None
        try:
            if b1.button("Set tags", disabled=not chosen):
                for run_id in chosen:
                    store.set_tags(run_id, tags.split(","))
                message = f"Tagged {len(chosen)} run(s): {tags.strip() or '(no tags)'}."
            hide = not all(by_id[i]["hidden"] for i in chosen) if chosen else True
            if b2.button("Hide" if hide else "Show again", disabled=not chosen):
                store.set_hidden(chosen, hide)
                message = f"{'Hid' if hide else 'Showing again'} {len(chosen)} run(s)."
            confirm = b3.checkbox(f"Yes, delete {', '.join(f'#{i}' for i in chosen) or 'them'}", disabled=not chosen,
                                  help="A deleted run's record, masks and channel statistics are removed from the "
                                       "store; a model folder it saved stays.")
            if b3.button("Delete", disabled=not (chosen and confirm), type="primary"):
                store.delete(chosen)
                message = f"Deleted run(s) {', '.join(f'#{i}' for i in chosen)} and their masks and statistics."
        except CalibLabError as exc:
            st.error(str(exc))
        if message:
            st.session_state.results_message = message
            st.rerun()


if st.session_state.get("results_message"):
    st.success(st.session_state.pop("results_message"))
manage_runs()

# --- perplexity, with the dense baseline ------------------------------------------------------------
ppl_columns = [c for c in view.columns if c.startswith("ppl ")]
if ppl_columns and not view.empty:
    metric = linked_choice(st, "Perplexity", ppl_columns, "ppl")
    pruned = view[view.method != DENSE]
    measured = pruned.dropna(subset=[metric])
    reference = by_id[int(measured.id.iloc[-1])] if not measured.empty else None
    source = metric.removeprefix("ppl ")
    dense = dense_baseline(runs, reference, source) if reference else None
    show_chart(st, perplexity_chart(pruned, metric, dense), "perplexity_per_run")
    if reference is not None:
        job = (reference["record"] or {}).get("job") or {}
        _model, protocol, seqlen, windows = evaluation_of(reference, source)
        evaluation = f"{job.get('ppl_protocol', protocol)}, {windows} x {seqlen} tokens, as run #{reference['id']}"
        if dense is not None:
            st.caption(f"Dashed line: the dense model on the same evaluation ({evaluation}).")
        else:
            st.caption(f"No dense baseline measured on this evaluation ({evaluation}).")
            if job and st.button("Measure the dense model on this evaluation"):
                baseline = RunSpec(model=reference["model"], dtype=job.get("dtype", "float32"), seqlen=job["seqlen"],
                                   config=PruneConfig(device=st.session_state.device),
                                   evaluation=EvalSpec.of_record(job))
                st.session_state.dense_job = manager().submit("dense baseline", tasks.dense_baseline, baseline,
                                                              device=baseline.config.device, kind=KIND).id
    live_view("dense_job", KIND, lambda j: st.error(j.error) if j.status in ("failed", "cancelled") else None)
    numeric = pruned[~pruned.sparsity.astype(str).str.contains(":")].dropna(subset=[metric]).copy()
    if not numeric.empty:
        numeric["sparsity"] = numeric.sparsity.astype(float)
        fig = px.line(numeric.sort_values("sparsity"), x="sparsity", y=metric, color="calibration",
                      line_dash="method", markers=True, log_y=True, hover_data=["label"],
                      title="Perplexity vs sparsity by calibration source",
                      labels={"sparsity": "sparsity (fraction of weights zeroed)", metric: f"{metric} (log scale)"})
        if dense is not None:
            fig.add_hline(y=dense, line_dash="dash", annotation_text="dense")
        ticks_at(fig, numeric.sparsity)
        show_chart(st, Chart(fig, numeric[["label", "method", "calibration", "sparsity", metric]]), "perplexity_vs_sparsity")

    # --- the paper's central claim, on this machine's runs ------------------------------------------
    scores = {model: store.similarity_scores(model) for model in pruned.model.unique()}
    points = similarity_vs_perplexity(pruned, scores, metric)
    if points.empty:
        st.caption("Similarity vs perplexity: score the calibration sets of these runs on the Similarity page "
                   "(same model) to see whether more training-like data pruned better.")
    else:
        show_chart(st, similarity_vs_perplexity_chart(points, metric), "similarity_vs_perplexity")

# --- per-block curves of chosen runs ----------------------------------------------------------------
st.subheader("Compare runs block by block")
with_blocks = [i for i in view.id if (by_id[i]["record"] or {}).get("blocks")]
selected = st.multiselect("Runs", with_blocks, [i for i in ids_from_link("runs") if i in with_blocks],
                          format_func=lambda i: run_label(by_id[i]))
block_metric = st.radio("Per block", list(BLOCK_METRICS), horizontal=True, format_func=lambda m: m.replace("_", " "))
if selected:
    st.query_params["runs"] = ",".join(map(str, selected))
    show_chart(st, overlay_chart([by_id[i] for i in selected], block_metric), f"per_block_{block_metric}")
    st.caption("This page's address now reopens this comparison: copy it from the browser to share it.")
elif "runs" in st.query_params:
    del st.query_params["runs"]

# --- two runs: what differs in their settings and in their masks -----------------------------------
st.subheader("Two runs: settings and mask agreement")
with st.expander("What this measures"):
    st.markdown(r"""The settings table lists every setting the two run records state differently (the job, the
method's config, the environment). Mask agreement, for two runs of the same model with stored masks: the Jaccard
index of the weights each kept, $J = |K_A \cap K_B| \,/\, |K_A \cup K_B|$, per module and pooled per block. At
50% sparsity two independent random masks give $J \approx 1/3$; identical masks give 1. Two calibration sets
that give a low $J$ prune the model differently, whatever their perplexities say.""")
finished = [i for i in view.id if by_id[i]["status"] == "finished" and by_id[i]["method"] != DENSE]
if len(finished) < 2:
    st.caption("Needs two finished runs (pruned, in the table above).")
else:
    c1, c2 = st.columns(2)
    run_a = linked_choice(c1, "Run A", finished, "a", 0, format_func=lambda i: run_label(by_id[i]))
    run_b = linked_choice(c2, "Run B", finished, "b", 1, format_func=lambda i: run_label(by_id[i]))
    differences, shared = settings_diff(by_id[run_a], by_id[run_b])
    if run_a == run_b:
        st.caption("Choose two different runs.")
    else:
        st.markdown(f"**Settings that differ** ({len(differences)}; {shared} others are the same)")
        if differences:
            st.dataframe(differences, width="stretch", hide_index=True)
        masks = {i: (by_id[i]["record"] or {}).get("masks") for i in (run_a, run_b)}
        if not all(masks.values()):
            st.caption("Mask agreement needs both runs' stored masks (runs from the app and the CLI keep them).")
        else:
            try:
                per_module = mask_agreement(masks[run_a], masks[run_b])
                per_block = block_agreement(per_module)
                st.metric("Jaccard of kept weights, whole model", f"{overall_jaccard(per_module):.3f}")
                st.page_link("app_pages/inside.py", label="Inside a layer: why these two masks differ",
                             icon=":material/biotech:", query_params={"a": str(run_a), "b": str(run_b)})
                c1, c2 = st.columns(2)
                bars = px.bar(per_block, x="block", y="jaccard", title="Per-block Jaccard",
                              labels={"jaccard": "Jaccard of kept weights (1 = identical masks)"})
                show_chart(c1, Chart(whole_blocks(bars, len(per_block)), per_block), "jaccard_per_block")
                pivot = per_module.pivot(index="module", columns="block", values="jaccard")
                heat = px.imshow(pivot, aspect="auto", title="Jaccard per module (colour: the range of these values)",
                                 labels={"color": "Jaccard"})
                show_chart(c2, Chart(whole_blocks(heat, pivot.shape[1]), per_module), "jaccard_per_module")
            except CalibLabError as exc:
                st.error(str(exc))

# --- one run's report -------------------------------------------------------------------------------
def show_saved_model(run: dict) -> None:
    """Where a run's pruned model was saved, its size and how to load it; else how to make it again."""
    record = run["record"] or {}
    saved = record.get("saved")
    if saved:
        check = saved["reload_check"]
        bitmask = saved["bitmask_estimate_bytes"]
        st.markdown(f"**Pruned model:** `{saved['path']}`, {saved['bytes'] / 2**20:.1f} MiB on disk ({saved['format']}"
                    + (f"; a bitmask encoding would take about {bitmask / 2**20:.1f} MiB" if bitmask else "") + "). "
                    + ("Checked after saving: it reloads with identical weights and logits."
                       if check["checked"] else f"Reload check skipped: {check['reason']}."))
        st.code(f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
                f'model = AutoModelForCausalLM.from_pretrained("{saved["path"]}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{saved["path"]}")', language="python")
        push = record.get("push")
        if push:
            st.caption(f"Uploaded to {push['url']}" if "url" in push else f"Not uploaded to {push['repo']}: {push['error']}")
    elif (record.get("job") or {}).get("save"):  # a run saved before sizes and reload checks were recorded
        st.markdown(f"**Pruned model:** `{record['job']['save']}`")
    elif run["status"] == "finished" and run["method"] != DENSE and record.get("job"):
        # Runs happen in their own process: the pruned model is gone when the run ends.
        st.caption("This run's model was not saved. Rerunning it with the same data, seed and settings gives "
                   "the same masks: from the command line, or here as a new run that saves the model.")
        st.code(reproduce_command(replace(spec_of_record(record), save="pruned-model", overwrite=False)),
                language="bash")
        folder = st.text_input("Save folder for the remade model", f"pruned-models/run-{run['id']}")
        if st.button("Remake and save this run's model", disabled=not folder.strip()):
            try:
                job = access_policy().spec(replace(spec_of_record(record), save=folder.strip(), overwrite=False,
                                                   report=None))
                check_outputs(job)
                st.session_state.prune_job = manager().submit(
                    f"remake run {run['id']} and save", tasks.prune, job, kind=LIVE_KINDS["prune"],
                    device=job.config.device).id
                st.success("Started: follow it on the Prune page; the new run will show its saved folder here.")
            except CalibLabError as exc:
                st.error(str(exc))


linked = ids_from_link("run")
one = st.selectbox("Report of run", [None] + list(table.id), index=(list(table.id).index(linked[0]) + 1) if linked else 0,
                   format_func=lambda i: "(choose a run)" if i is None else run_label(by_id[i]))
if one:
    st.query_params["run"] = str(one)
    record = by_id[one]
    st.download_button("Download report (JSON)", json.dumps(record, indent=2), f"run-{one}.json")
    show_saved_model(record)
elif "run" in st.query_params:
    del st.query_params["run"]
