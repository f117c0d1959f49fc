import json

import pandas as pd
import plotly.express as px
import streamlit as st

from calib_core.metrics.agreement import block_agreement, mask_agreement, overall_jaccard
from calib_core.errors import CalibLabError
from calib_core.runs import RunStore, runs_table

st.title("Results")
with st.expander("Reading these charts"):
    st.markdown("Each run is one (model, calibration set, method, sparsity, seed). Calibration data matters "
                "when runs that differ only in their calibration source differ by more than seed noise; the "
                "effect grows with sparsity and is largest for N:M patterns.")
runs = RunStore().list()
if not runs:
    st.info("No runs yet. Start one on the Prune page or with `python -m calib_core prune`.")
    st.stop()

table = runs_table(runs)
c1, c2 = st.columns(2)
methods = c1.multiselect("Methods", sorted(table.method.dropna().unique()), sorted(table.method.dropna().unique()))
statuses = c2.multiselect("Status", sorted(table.status.unique()), ["finished"] if "finished" in set(table.status) else [])
view = table[table.method.isin(methods) & table.status.isin(statuses)]
st.dataframe(view, width="stretch", hide_index=True)
st.download_button("Download table (CSV)", view.to_csv(index=False), "runs.csv")

ppl_columns = [c for c in view.columns if c.startswith("ppl ")]
if ppl_columns and not view.empty:
    metric = st.selectbox("Perplexity", ppl_columns)
    finished = view.dropna(subset=[metric])
    labelled = finished.assign(run=finished.id.map("run {}".format))
    st.plotly_chart(px.bar(labelled, x="run", y=metric, color="method", hover_data=["calibration", "sparsity"],
                           title="Perplexity per run"), width="stretch")
    numeric = finished[finished.sparsity.str.contains(":") == False].copy()  # noqa: E712 (pandas mask)
    if not numeric.empty:
        numeric["sparsity"] = numeric.sparsity.astype(float)
        st.plotly_chart(px.line(numeric.sort_values("sparsity"), x="sparsity", y=metric, color="calibration",
                                line_dash="method", markers=True, log_y=True,
                                title="Perplexity vs sparsity by calibration source"), width="stretch")

selected = st.multiselect("Overlay per-block sparsity of runs", list(view.id))
overlay = []
for run in runs:
    if run["id"] in selected and run["record"]:
        overlay += [{"run": str(run["id"]), "block": b["index"], "sparsity": b["sparsity"]} for b in run["record"]["blocks"]]
if overlay:
    st.plotly_chart(px.line(pd.DataFrame(overlay), x="block", y="sparsity", color="run", markers=True,
                            title="Per-block sparsity"), width="stretch")
st.subheader("Mask agreement")
with st.expander("What this measures"):
    st.markdown(r"""For two runs of the same model, the Jaccard index of the weights each kept,
$J = |K_A \cap K_B| \,/\, |K_A \cup K_B|$, per module and pooled per block. At 50% sparsity two independent
random masks give $J \approx 1/3$; identical masks give 1. Two calibration sets that give a low $J$ prune the
model differently, whatever their perplexities say.""")
with_masks = [r for r in runs if r["status"] == "finished" and (r["record"] or {}).get("masks")]
if len(with_masks) < 2:
    st.caption("Needs two finished runs with stored masks (runs started from the app or the CLI keep them).")
else:
    names = {r["id"]: f"{r['id']}: {r['method']} {r['sparsity']} on {r['calibration']} ({r['model']})" for r in with_masks}
    c1, c2 = st.columns(2)
    run_a = c1.selectbox("Run A", list(names), format_func=names.get)
    run_b = c2.selectbox("Run B", list(names), index=1, format_func=names.get)
    masks = {r["id"]: r["record"]["masks"] for r in with_masks}
    if run_a != run_b:
        try:
            per_module = mask_agreement(masks[run_a], masks[run_b])
            per_block = block_agreement(per_module)
            st.metric("Jaccard of kept weights, whole model", f"{overall_jaccard(per_module):.3f}")
            c1, c2 = st.columns(2)
            c1.plotly_chart(px.bar(per_block, x="block", y="jaccard", range_y=[0, 1], title="Per-block Jaccard"),
                            width="stretch")
            c2.plotly_chart(px.imshow(per_module.pivot(index="module", columns="block", values="jaccard"),
                                      aspect="auto", zmin=0, zmax=1, title="Jaccard per module"),
                            width="stretch")
        except CalibLabError as exc:
            st.error(str(exc))

one = st.selectbox("Report of run", [None] + list(view.id))
if one:
    record = next(r for r in runs if r["id"] == one)
    st.download_button("Download report (JSON)", json.dumps(record, indent=2), f"run-{one}.json")
    saved = ((record["record"] or {}).get("job") or {}).get("save")
    if saved:
        st.write(f"Pruned model folder: `{saved}`")
