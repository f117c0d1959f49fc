"""A stand-in page for bench/tab_cost.py: one way of showing a running job per `?case=`, refreshed
as the app's live views are (a fragment), on synthetic prune events (30 blocks, 7 modules each)."""

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from calib_core.experiments.run_figures import live_prune_charts  # noqa: E402
from calib_core.prune.events import BlockRecord, ModuleRecord  # noqa: E402

case = st.query_params.get("case", "idle")
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
if case == "bar_no_easing":  # what app.py does
    st.html("<style>[data-testid='stProgressBarTrack'] > div { transition: none !important; }</style>")


def events(blocks: int) -> list:
    rnd, out = random.Random(0), []
    for b in range(blocks):
        modules = [ModuleRecord(b, name, [576, 576], 0.5, "unstructured", 0.5, 1.0, rnd.random(), 0.05)
                   for name in MODULES]
        out += modules + [BlockRecord(b, f"model.layers.{b}", 0.5, "unstructured", 0.5, None, rnd.random(), modules)]
    return out


def blocks_now() -> int:  # a new block every 0.5 s, 30 in all, then again
    return 1 + int(time.time() / 0.5) % 30


def charts(blocks: int, keys: str = "") -> None:
    figures = live_prune_charts(events(blocks))
    left, right = st.columns(2)
    left.plotly_chart(figures["sparsity"].figure, key=f"sparsity{keys}")
    right.plotly_chart(figures["seconds"].figure, key=f"seconds{keys}")
    st.plotly_chart(figures["recon_error"].figure, key=f"recon{keys}")


st.title("Tab cost")
if case == "preloaded_then_new_charts":  # plotly.js already loaded, as in a tab that showed a run
    st.plotly_chart(live_prune_charts(events(1))["sparsity"].figure, key="preload")
st.session_state.setdefault("opened", time.time())


@st.fragment(run_every=None if case == "idle" else 2.0)
def view():
    n = blocks_now()
    st.markdown("ready")
    if case == "text":
        st.markdown(f"Pruning {n}/30 blocks, about {30 - n} s left")
    elif case in ("bar_eased", "bar_no_easing"):
        st.progress(n / 30, f"Pruning {n}/30 blocks, about {30 - n} s left")
    elif case == "charts_unchanged":
        charts(30)
    elif case == "charts_updated":  # new figures every 6 s, in place
        charts(1 + int(time.time() / 6) * 7 % 30)
    elif case in ("new_charts", "preloaded_then_new_charts") and time.time() - st.session_state.opened > 8:
        charts(30, keys="late")  # three charts appear once, 8 s after the tab opened


view()
