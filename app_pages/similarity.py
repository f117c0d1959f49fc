"""Similarity: how training-like each calibration set is to the model (Min-K%++ and friends)."""

import plotly.express as px
import streamlit as st

from app_ui.cache import access_policy
from app_ui.forms import any_invalid, bounded_number, preview
from app_ui.live import live_view, page_kind
from calib_core.data import sets
from calib_core.data.sources import BUILTIN_SOURCES, MODES
from calib_core.errors import CalibLabError
from calib_core.jobs import manager, tasks
from calib_core.metrics.similarity import METRIC_LABELS, REFERENCE_CORPORA

KIND = page_kind(__file__)  # the jobs this page starts and follows

st.title("Similarity to pretraining data")
with st.expander("What Min-K%++ measures"):
    st.markdown(r"""
At each position the model predicts a distribution $p$; with $\mu_t = \sum_v p(v)\log p(v)$ and
$\sigma_t^2 = \sum_v p(v)(\log p(v))^2 - \mu_t^2$, the token's score is $z_t = (\log p(x_t) - \mu_t)/\sigma_t$.
**Min-K%++** averages the lowest $K$ fraction of $z_t$: text seen in training has few surprising tokens, so
a higher score means more training-like. Min-K% uses $\log p(x_t)$ instead. N-gram overlap and unigram
Jensen-Shannon divergence compare word statistics with a reference corpus without any model.

**What is scored.** By default the windows a calibration set would use (same length, sampling mode and
seed as a pruning run), each with the tokenizer's BOS first where it adds one, so that every window token
is scored and sets of short texts (self-generated) and long ones are compared on equally long items.
"Whole texts" scores each text's first N tokens instead (no special tokens).
""")
options = list(BUILTIN_SOURCES) + [f"set:{n}" for n in sets.list_sets()]
preset = st.session_state.get("similarity_preset") or {}  # filled by a Start page preset
chosen = st.multiselect("Sets to compare", options, [s for s in preset.get("sets", options[:2]) if s in options])
c1, c2, c3, c4 = st.columns(4)
reference = c1.selectbox("Reference corpus", [None, *BUILTIN_SOURCES]
                         + list(REFERENCE_CORPORA), help="Online corpora stream from the hub; offline they fail clearly.")
samples = bounded_number(c2, "Items per set", 2, 2000, preset.get("items", 16), step=1)
k = c3.slider("K", 0.05, 1.0, 0.5)
max_tokens = bounded_number(c4, "Tokens per item", 16, 4096, preset.get("tokens", 256), step=1,
                            help="window length, or the cut of a whole text")
d1, d2, d3 = st.columns(3)
scoring = d1.radio("Score", ["windows", "texts"], horizontal=True,
                   format_func={"windows": "calibration windows", "texts": "whole texts"}.get)
mode = d2.selectbox("Sampling mode (windows)", list(MODES), list(MODES).index("concat"), disabled=scoring != "windows",
                    help="concat works for short texts too; document needs texts longer than the window. "
                         + "; ".join(f"{name}: {text}" for name, text in MODES.items()))
seed = bounded_number(d3, "Seed", 0, 10**6, 0, step=1)
if st.button("Score", type="primary", disabled=not chosen or any_invalid(samples, max_tokens, seed)):
    spec, options_, device = st.session_state.model_spec, dict(st.session_state.model_options), st.session_state.device
    try:
        access_policy().scoring(int(samples), int(max_tokens))
        spec = access_policy().model(spec, options_["trust_remote_code"])
    except CalibLabError as exc:
        st.error(str(exc))
    else:
        st.session_state.sim_job = manager().submit(
            "similarity", tasks.similarity, spec, options_, device, chosen,
            dict(count=int(samples), seed=int(seed), scoring=scoring, seqlen=int(max_tokens), mode=mode,
                 reference=reference, k=k, max_tokens=int(max_tokens)),
            device=device, kind=KIND).id


def show(job):
    if not job.done and st.button("Cancel scoring"):
        job.cancel()
    if not job.done:
        progress = job.events_of("similarity")
        if progress:
            last = progress[-1]
            st.progress(last.sets_done / last.sets_total, f"{last.sets_done}/{last.sets_total} sets scored "
                        f"({last.texts_scored} texts), last: {last.last_set}")
        elif job.status == "running":
            st.info("Loading the model and the texts...")
        return
    if job.status != "finished":
        st.error(job.error)
        return
    table, summary = job.result
    c1, c2 = st.columns([3, 1])
    metric = c1.selectbox("Metric", [c for c in table.columns if c not in ("set", "sample", "tokens", "text")],
                          format_func=lambda m: METRIC_LABELS.get(m, m))
    shape = c2.radio("Plot", ["violin", "box"], horizontal=True)
    plot = px.violin if shape == "violin" else px.box
    fig = plot(table, x="set", y=metric, points="all", custom_data=["set", "sample"], hover_data=["sample"],
               labels={metric: METRIC_LABELS.get(metric, metric), "set": "calibration set"},
               **({"box": True} if shape == "violin" else {}))
    picked = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points",
                             key="similarity_chart")
    points = picked.selection.points if picked else []
    if points:  # click a point to read its text
        chosen_set, sample = points[0]["customdata"][:2]
        row = table[(table.set == chosen_set) & (table["sample"] == sample)].iloc[0]
        preview(st, f"{chosen_set} sample {sample} ({metric} = {row[metric]:.3f})", row.text[:4000], 160)
    else:
        st.caption("Click a point to read its text.")
    lengths = table.groupby("set", sort=False)["tokens"].agg(["min", "max"])
    scored = "; ".join(f"{name}: {table.attrs['scoring'][name]}, {row['min']}"
                       + (f"-{row['max']}" if row["max"] != row["min"] else "") + " tokens per item"
                       for name, row in lengths.iterrows())
    st.caption(f"K = {table.attrs['k']}; {scored}; reference {table.attrs['reference']}")
    st.dataframe(summary, width="stretch")
    st.dataframe(table, width="stretch", hide_index=True)


live_view("sim_job", KIND, show)
