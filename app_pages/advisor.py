"""Advisor: rank candidate calibration sets for a target without pruning, say how far that ranking was
validated, and verify the top candidates by pruning with them."""

import streamlit as st

from app_ui.cache import access_policy
from app_ui.forms import any_invalid, bounded_number
from app_ui.live import live_view, page_kind
from calib_core.data import sets
from calib_core.data.sources import BUILTIN_SOURCES
from calib_core.data.strategies import RANDOM, STRATEGIES
from calib_core.errors import CalibLabError
from calib_core.jobs import manager, tasks
from calib_core.metrics.proxies import APPROXIMATION, predictable
from calib_core.models import resolve_dtype
from calib_core.prune import PruneConfig
from calib_core.runs import RunStore
from calib_core.runs.estimate import TimeEstimate, estimate_run
from calib_core.studies.advisor import (
    BEST,
    PROXIES,
    AdviceSettings,
    Candidate,
    best_validated_proxy,
    check_case,
    ranking,
    self_generated_caution,
    validation_note,
    verify_specs,
)

KIND = page_kind(__file__)
VERIFY_KIND = f"{KIND}-verify"  # its own kind: each view follows only its own jobs

st.title("Advisor")
with st.expander("What the advisor predicts, and how far to trust it"):
    st.markdown("Which calibration set should I prune with, for the capability I care about? Pruning with every "
                "candidate answers it (a sweep); the advisor answers from dense forwards only: each candidate's "
                "per-channel input norms against the target's, the masks the method would choose from each "
                "(their Jaccard), word overlap with the target, and the seed paper's Min-K%++ and calibration "
                f"perplexity. The mask proxies are {APPROXIMATION}. Below the ranking it says whether that proxy "
                "was validated for this case (docs/results/advisor.md) and offers to verify the top candidates "
                "by pruning with them.\n\n"
                "In the validation the best proxies told domains apart (which source to calibrate on) far better "
                "than they ranked sets drawn from one source by different strategies; where that holds for your "
                "case the note below the ranking says so: for a choice within one source, verify the top few.")

listed = list(BUILTIN_SOURCES) + [f"set:{name}" for name in sets.list_sets()]
chosen_by = [f"builtin:wiki@{name}" for name in STRATEGIES if name != RANDOM]
c1, c2 = st.columns([3, 1])
picked = c1.multiselect("Candidates", listed + chosen_by, list(BUILTIN_SOURCES),
                        help="Calibration sets to rank: a source drawn at random, or SOURCE@STRATEGY: its windows "
                             "chosen by a strategy.")
target = c2.selectbox("Target (the capability)", listed, list(BUILTIN_SOURCES).index("builtin:code"))
d1, d2, d3, d4, d5 = st.columns(5)
method = d1.selectbox("Method", list(predictable()))
setting = d2.selectbox("Setting", ["0.5", "0.6", "0.7", "2:4", "4:8"])
nsamples = bounded_number(d3, "nsamples", 1, 256, 8, step=1)
seqlen = bounded_number(d4, "seqlen", 16, 2048, 256, step=1)
proxy = d5.selectbox("Rank by", [BEST, *PROXIES],
                     format_func=lambda p: "the best validated proxy for the case" if p == BEST else PROXIES[p].label)

config = PruneConfig(method=method, device=st.session_state.device,
                     **({"pattern": setting} if ":" in setting else {"sparsity": float(setting)}))
if st.button("Rank the candidates", type="primary", disabled=any_invalid(nsamples, seqlen) or len(picked) < 2,
             help=None if len(picked) >= 2 else "Choose two or more candidates."):
    try:
        candidates = [Candidate.parse(c) for c in picked]
        settings = AdviceSettings(nsamples=int(nsamples), seqlen=int(seqlen), config=config.resolved())
        check_case(candidates, target, settings)
        spec = access_policy().model(st.session_state.model_spec, st.session_state.model_options["trust_remote_code"])
        st.session_state.advice_case = {"target": target, "settings": settings, "model": spec}
        st.session_state.advise_job = manager().submit(
            f"advise for {target}", tasks.advise, spec, dict(st.session_state.model_options), st.session_state.device,
            candidates, target, settings, device=st.session_state.device, kind=KIND).id
    except CalibLabError as exc:
        st.error(str(exc))


def show_advice(job):
    if not job.done:
        messages = [e.message for e in job.events_of("pipeline") if e.stage == "advise"]
        st.caption(messages[-1] if messages else "Loading the model and the target's windows")
        return
    if job.status != "finished":
        st.error(f"{job.status}: {job.error}")
        return
    table = job.result
    used, why = (best_validated_proxy(table.attrs["method"], table.attrs["setting"], table.attrs["target"])
                 if proxy == BEST else (proxy, f"ranked by {proxy}"))
    ranked = ranking(table, used)
    st.dataframe(ranked[["rank", "candidate", used] + [p for p in PROXIES if p != used] + ["seconds"]],
                 hide_index=True, width="stretch")
    st.caption(why[0].upper() + why[1:] + ".")
    case = st.session_state.get("advice_case")
    note = validation_note(used, table.attrs["method"], table.attrs["setting"], table.attrs["target"],
                           case["model"] if case else None)
    (st.success if note.predicts else st.warning)(note.text)
    caution = self_generated_caution(ranked)
    if caution:
        st.warning(caution)
    st.caption(f"Proxies took {table['seconds'].sum() + table.attrs['target_seconds']:.0f} s for "
               f"{len(table)} candidates and the target.")
    if case is None or case["target"] != table.attrs["target"]:
        return
    top_k = st.number_input("Verify the top K by pruning with them", 1, len(ranked), min(2, len(ranked)))
    dtype = resolve_dtype(st.session_state.model_options["dtype"], st.session_state.device)
    specs = verify_specs(case["model"], dtype, ranked.head(top_k), case["target"], case["settings"])
    costs = RunStore().run_costs(case["model"])
    parts = [estimate_run(spec, costs) for spec in specs]
    known = [p.seconds for p in parts if p.seconds is not None]
    estimate = TimeEstimate(sum(known), f"{len(specs)} run(s) at this machine's pace") if len(known) == len(parts) \
        else next(p for p in parts if p.seconds is None)
    st.caption(estimate.describe())
    if st.button(f"Prune with the top {top_k} and measure them on {case['target']}"):
        st.session_state.verify_job = manager().submit(
            f"verify the top {top_k} for {case['target']}", tasks.advise_verify, case["model"], dtype,
            ranked.head(top_k), case["target"], case["settings"], 8, device=st.session_state.device,
            kind=VERIFY_KIND).id
        st.rerun()  # the verification's own view is outside this one


def show_verification(job):
    if not job.done:
        runs = [e for e in job.events_of("pipeline") if e.stage == "run"]
        st.caption(f"Verifying: run {len(runs)} started" if runs else "Loading the model")
    elif job.status == "finished":
        st.dataframe(job.result, hide_index=True, width="stretch")
        st.caption("Each is an ordinary run: compare them on the Results page.")
    else:
        st.error(f"{job.status}: {job.error}")


live_view("advise_job", KIND, show_advice)
live_view("verify_job", VERIFY_KIND, show_verification)
