"""Inside a layer: why the calibration data changed what was pruned, for one run or two (deep link:
?a=RUN&b=RUN&block=B&module=NAME)."""

import streamlit as st

from app_ui.cache import cached_model
from app_ui.charts import show_chart
from calib_core.errors import CalibLabError
from calib_core.experiments.inside_figures import module_views
from calib_core.experiments.run_figures import Chart, run_label
from calib_core.metrics import inside
from calib_core.runs import RunStore, continuations

st.title("Inside a layer")
st.caption("Why did the calibration data change what was pruned? Pick a run (or two to compare), a block and a "
           "module: its input channels, the method's scores, the mask, and the whole model block by block.")
store = RunStore()
with_masks = [r for r in store.list() if r["status"] == "finished" and (r["record"] or {}).get("masks")]
if not with_masks:
    st.info("No finished run with stored masks yet: prune on the Prune page (or with `python -m calib_core prune`), "
            "then come back.")
    st.stop()
names = {r["id"]: run_label(r) for r in with_masks}
ids = list(names)


def linked(name: str, options: list):
    """The option the page's link names (?a=3), if it is one of `options`."""
    raw = st.query_params.get(name, "")
    value = int(raw) if raw.isdigit() else raw
    return value if value in options else None


c1, c2 = st.columns(2)
run_a = c1.selectbox("Run A", ids, index=ids.index(linked("a", ids)) if linked("a", ids) else len(ids) - 1,
                     format_func=names.get, key="inside_a")
others = [None] + [i for i in ids if i != run_a]
run_b = c2.selectbox("Run B (optional, to compare)", others,
                     index=others.index(linked("b", others)) if linked("b", others) else 0,
                     format_func=lambda i: "none" if i is None else names[i], key="inside_b")
try:
    a = inside.open_run(store, run_a)
    b = inside.open_run(store, run_b) if run_b is not None else None
    modules = a.modules()
    blocks = sorted({block for block, _ in modules})
    default = inside.most_different_module(a, b) if b is not None else inside.most_outlying_module(a)
    c1, c2 = st.columns(2)
    block_link = linked("block", [str(x) for x in blocks])
    block = c1.selectbox("Block", blocks, index=blocks.index(int(block_link) if block_link else default[0]),
                         key=f"inside_block_{run_a}_{run_b}",
                         help="Default: where the two runs' masks differ most (one run: the module with most outliers)")
    in_block = [m for bl, m in modules if bl == block]
    module_link = linked("module", in_block)
    chosen = module_link or (default[1] if default[0] == block else in_block[0])
    module = c2.selectbox("Module", in_block, index=in_block.index(chosen), key=f"inside_module_{run_a}_{run_b}_{block}")
except CalibLabError as exc:
    st.error(str(exc))
    st.stop()
st.query_params.update({"a": str(run_a), "block": str(block), "module": module, **({"b": str(run_b)} if run_b else {})})
if run_b is None and "b" in st.query_params:
    del st.query_params["b"]

with st.spinner("Reading the masks and statistics of this module..."):
    try:
        views, notes = module_views(a, block, module, b)
    except CalibLabError as exc:
        st.error(str(exc))
        st.stop()
for note in notes:
    st.info(note)
titles = {"channels": "1. Channels", "scores": "2. Scores", "mask": "3. The mask", "model": "4. Across the model"}
for view in views:
    st.subheader(titles[view.name])
    st.markdown(view.explain)
    show_chart(st, Chart(view.figure, view.table), f"inside-{view.name}", key_prefix=f"{run_a}-{run_b}-{block}-{module}-")

st.subheader("5. Dense and pruned side by side")
st.markdown("One prompt, continued by the dense model and by each run's pruned model (greedy, the same number of "
            "new tokens, the same seed): a perplexity gap, as text.")
chosen_runs = [r.record for r in (a, b) if r is not None]
for record in chosen_runs:
    how = continuations.how_made(record)
    if how == "remade":
        st.caption(f"Run {record['run_id']} has no saved folder and its method changes kept weights: it is remade from "
                   f"its record first, about {continuations.remake_seconds(record):.0f} s (what its own prune took).")
    else:
        st.caption(f"Run {record['run_id']}: from its {how}.")
with st.form("side_by_side"):
    prompt = st.text_area("Prompt", "The history of the city begins", height=80)
    new_tokens = st.number_input("New tokens", 1, 400, 40)
    go = st.form_submit_button("Continue the prompt", type="primary")
if go:
    job = chosen_runs[0].get("job") or {}
    with st.spinner("Loading the models and writing..."):
        try:
            dense = cached_model(chosen_runs[0]["model"]["spec"], job.get("dtype", "float32"))
            st.session_state.inside_written = ((run_a, run_b), continuations.side_by_side(
                chosen_runs, prompt, int(new_tokens), dense=dense))
        except CalibLabError as exc:
            st.error(str(exc))
written_for, written = st.session_state.get("inside_written") or (None, [])
if written_for != (run_a, run_b):  # written for other runs
    written = []
for column, found in zip(st.columns(len(written) or 1), written):
    column.markdown(f"**{found.label}** ({found.source}, {found.seconds:.1f} s)")
    column.text(found.text)
