"""What a viewer of the app sees: honest phased progress, readable charts, messages instead of silently
red fields, confirmations before overwriting, short pasted texts usable, a running job visible from
a new tab, and the Results page's labels, baseline, links and similarity chart."""

import math
import time
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from calib_core.data import sets
from calib_core.experiments.run_figures import live_prune_charts, run_label
from calib_core.experiments.stats import dense_baseline, similarity_vs_perplexity
from calib_core.jobs import manager
from calib_core.jobs.progress import run_progress
from calib_core.prune.events import AllocationEvent, BlockRecord, ModuleRecord, StageEvent
from calib_core.runs.events import PipelineEvent
from tests.test_jobs import fails, gated
from tests.tiny import save_tiny_folder

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _wait(job, seconds=300):  # a bound for a loaded machine, not a target
    deadline = time.time() + seconds
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    return job


# --- progress and charts, from events ---------------------------------------------------------------
def test_owl_progress_names_its_phases_and_times_each_phase_on_its_own():
    t0 = 1000.0
    events = [PipelineEvent("run", "run 1 started", at=t0), PipelineEvent("estimate", "memory", at=t0 + 5)]
    events += [StageEvent("outlier_scan", i, 30, 0.0, at=t0 + 5 + 4 * i) for i in range(1, 31)]  # 4 s a block
    scan = run_progress(events[:12], "running", now=t0 + 45)
    assert scan.phase == "OWL outlier scan" and "10/30 blocks" in scan.text and "about 80 s left" in scan.text
    events += [AllocationEvent([1.0] * 30, [0.5] * 30, ["unstructured"] * 30), StageEvent("prune", 0, 30, 0.0, at=t0 + 200)]
    events += [StageEvent("prune", i, 30, 2.0, at=t0 + 200 + 2 * i) for i in range(1, 11)]  # 2 s a block
    pruning = run_progress(events, "running", now=t0 + 220)
    # the 195 s of load and scan do not count: 20 s for 10 blocks, so 40 s for the other 20
    assert pruning.phase == "Pruning" and "10/30 blocks" in pruning.text and "about 40 s left" in pruning.text
    events.append(PipelineEvent("eval", "perplexity on builtin:wiki (1 of 2)",
                                {"source": "builtin:wiki", "number": 1, "total": 2}, at=t0 + 300))
    evaluating = run_progress(events, "running", now=t0 + 310)
    assert evaluating.phase == "Evaluating perplexity" and "builtin:wiki (1 of 2)" in evaluating.text
    assert run_progress([], "queued").phase == "Queued" and run_progress(events, "finished").fraction == 1.0


def test_a_one_block_chart_has_whole_block_ticks_and_named_units():
    module = ModuleRecord(0, "mlp.up_proj", [8, 4], 0.5, "unstructured", 0.5, 1.0, 0.25, 0.1)
    block = BlockRecord(0, "model.layers.0", 0.5, "unstructured", 0.5, None, 0.2, [module])
    charts = live_prune_charts([StageEvent("prune", 0, 1, 0.0), module, block])
    sparsity = charts["sparsity"].figure.layout
    assert sparsity.xaxis.tickformat == "d" and sparsity.xaxis.dtick == 1 and "decoder layer" in sparsity.xaxis.title.text
    assert "fraction of weights" in sparsity.yaxis.title.text
    assert "(s)" in charts["seconds"].figure.layout.yaxis.title.text
    heat = charts["recon_error"].figure.layout.coloraxis
    assert heat.cmin is None and heat.cmax is None  # the colours follow the data, not a fixed 0..1
    assert list(charts["sparsity"].data.block) == [0]  # the exported data is what is drawn


def test_similarity_vs_perplexity_joins_scores_and_runs_per_source():
    runs = pd.DataFrame({"status": ["finished"] * 3 + ["failed"], "model": ["m"] * 4, "method": ["wanda"] * 4,
                         "sparsity": ["0.5"] * 4, "calibration": ["builtin:wiki", "builtin:wiki", "set:x", "set:x"],
                         "ppl builtin:wiki": [20.0, 22.0, 30.0, 1.0]})
    scores = {"m": {"builtin:wiki": {"min_k_pp": -0.2}, "set:x": {"min_k_pp": -0.9}}}
    points = similarity_vs_perplexity(runs, scores, "ppl builtin:wiki").set_index("calibration")
    assert points.loc["builtin:wiki", "ppl_mean"] == 21.0 and points.loc["builtin:wiki", "runs"] == 2
    assert points.loc["set:x", "ppl_mean"] == 30.0 and points.loc["set:x", "min_k_pp"] == -0.9  # failed run left out
    assert similarity_vs_perplexity(runs, {}, "ppl builtin:wiki").empty


# --- the pages ----------------------------------------------------------------------------------------
def test_the_cli_similarity_records_scores_for_the_results_chart(tmp_path):
    from calib_core.cli import main as cli_main
    from calib_core.runs import RunStore

    model = str(save_tiny_folder(tmp_path / "tiny"))
    assert cli_main(["similarity", "--model", model, "--sets", "builtin:wiki", "builtin:news", "--samples", "2",
                     "--seqlen", "16"]) == 0
    scores = RunStore().similarity_scores(model)
    assert set(scores) == {"builtin:wiki", "builtin:news"}
    assert all(isinstance(s["min_k_pp"], float) for s in scores.values()), scores


def _app(page: str, tmp_path=None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tmp_path is not None:
        app.session_state["model_spec"] = str(save_tiny_folder(tmp_path / "tiny"))
    app.run()
    app.switch_page(page).run()
    return app


def _texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def test_an_out_of_range_number_says_so_and_blocks_the_run():
    app = _app("app_pages/prune.py")
    box = next(n for n in app.number_input if n.label == "nsamples")
    box.set_value(0).run()
    assert "nsamples must be from 1 to 2048; 0 is outside" in _texts(app.error)
    assert next(b for b in app.button if b.label == "Start pruning").disabled
    next(n for n in app.number_input if n.label == "nsamples").set_value(100000).run()
    assert "100000 is outside" in _texts(app.error)
    next(n for n in app.number_input if n.label == "nsamples").set_value(4).run()
    assert not app.error and not next(b for b in app.button if b.label == "Start pruning").disabled


def test_saving_a_set_under_an_existing_name_asks_first():
    sets.save_set("mine", [{"text": "kept text"}])
    app = _app("app_pages/calibration.py")
    next(t for t in app.text_input if t.label == "Save as set").set_value("mine").run()
    assert "set:mine already exists" in _texts(app.warning)
    assert next(b for b in app.button if b.label == "Save set").disabled
    next(c for c in app.checkbox if c.label == "Replace the existing set:mine").check().run()
    next(b for b in app.button if b.label == "Save set").click().run()
    assert sets.set_texts("mine") != ["kept text"]  # replaced by the builtin corpus only after the tick


def test_an_invalid_self_generation_set_name_is_refused_before_generating():
    app = _app("app_pages/calibration.py")
    next(t for t in app.text_input if t.key == "gen_name").set_value("../bad").run()
    assert "Invalid set name '../bad'" in _texts(app.error)
    assert next(b for b in app.button if b.label == "Generate").disabled


def test_pasted_short_paragraphs_prune_in_concat_mode(tmp_path):
    app = _app("app_pages/calibration.py", tmp_path)
    next(r for r in app.radio if r.label == "From").set_value("Paste text").run()
    pasted = "\n\n".join(f"Paragraph {i} is a short text about topic {i}." for i in range(12))
    app.text_area[0].set_value(pasted).run()
    assert "a run will join them (concat mode)" in _texts(app.info)
    assert next(r for r in app.radio if r.label == "Sampling mode for runs").value == "concat"
    next(t for t in app.text_input if t.label == "Save as set").set_value("pasted").run()
    next(b for b in app.button if b.label == "Save set").click().run()
    assert app.session_state["calib_source"] == "set:pasted"
    app.switch_page("app_pages/prune.py").run()
    next(n for n in app.number_input if n.label == "nsamples").set_value(2)
    next(n for n in app.number_input if n.label == "seqlen").set_value(16)
    next(n for n in app.number_input if n.label == "Eval windows per source").set_value(1).run()
    assert next(s for s in app.selectbox if s.label == "Sampling mode").value == "concat"
    next(b for b in app.button if b.label == "Start pruning").click().run()
    job = _wait(manager().get(app.session_state["prune_job"]))
    assert job.status == "finished", job.error
    assert job.result["calibration"]["mode"] == "concat"


def test_a_new_tab_shows_the_running_job_with_its_cancel(tmp_path):
    job = manager().submit("wanda 0.5 on builtin:wiki", gated, str(tmp_path / "gate"), {}, kind="prune")
    deadline = time.time() + 300
    while job.status != "running" and time.time() < deadline:
        time.sleep(0.1)
    app = _app("app_pages/prune.py")  # a fresh session: nothing in its state
    assert f"Job {job.id} (wanda 0.5 on builtin:wiki): **running**" in _texts(app.markdown)
    next(b for b in app.button if b.label == "Cancel run").click().run()
    (tmp_path / "gate").touch()
    assert (Path(job.folder) / "cancel").exists()


def one_block_then_gated(job, gate: str):
    """A running prune's first finished block, then a wait until the file `gate` exists."""
    job.emit(BlockRecord(index=0, name="model.layers.0", target_sparsity=0.5, pattern="unstructured", sparsity=0.5,
                         outlier_ratio=None, seconds=0.1))
    while not Path(gate).exists():
        time.sleep(0.02)
    return {}


def test_live_charts_draw_without_exports_and_can_be_switched_off(tmp_path):
    job = manager().submit("wanda 0.5 on builtin:wiki", one_block_then_gated, str(tmp_path / "gate"), kind="prune")
    deadline = time.time() + 300
    while not job.events_of("block") and time.time() < deadline:
        time.sleep(0.1)
    try:
        app = _app("app_pages/prune.py")
        assert any("Per-block sparsity" in c.proto.spec for c in app.get("plotly_chart"))
        # a chart still filling up offers no export of its partial data
        assert not [b for b in app.get("download_button") if b.proto.label in ("HTML", "CSV")]
        next(t for t in app.toggle if t.label == "Live charts").set_value(False).run()
        assert not app.get("plotly_chart")
        assert "The charts appear when the run ends (live charts are off)." in _texts(app.caption)
    finally:
        (tmp_path / "gate").touch()
        _wait(job)


def one_block_then_result(job, result: dict):
    one_block_then_gated(job, "/")  # "/" exists: no wait
    return result


def test_a_fresh_prune_tab_shows_the_last_run_and_no_empty_charts_for_a_run_without_blocks():
    first = _wait(manager().submit("wanda 0.5 on builtin:wiki", one_block_then_result,
                                   {"perplexity": [], "run_id": 1}, kind="prune"))
    app = _app("app_pages/prune.py")  # a new session: it shows the last run, with the chart of its block
    assert f"Job {first.id} (wanda 0.5 on builtin:wiki): **finished**" in _texts(app.markdown)
    assert any("Per-block sparsity" in c.proto.spec for c in app.get("plotly_chart"))
    failed = _wait(manager().submit("wanda 0.5 on builtin:wiki", fails, RuntimeError("no model here"), kind="prune"))
    app = _app("app_pages/prune.py")
    assert f"Job {failed.id} (wanda 0.5 on builtin:wiki): **failed**" in _texts(app.markdown)
    assert "no model here" in _texts(app.error) and not app.get("plotly_chart")


def test_results_label_runs_link_comparisons_and_draw_the_dense_baseline(tmp_path):
    app = _app("app_pages/prune.py", tmp_path)
    next(n for n in app.number_input if n.label == "nsamples").set_value(2)
    next(n for n in app.number_input if n.label == "seqlen").set_value(16)
    next(n for n in app.number_input if n.label == "Eval windows per source").set_value(1).run()
    next(b for b in app.button if b.label == "Start pruning").click().run()
    first = _wait(manager().get(app.session_state["prune_job"]))
    assert first.status == "finished", first.error
    run_id = first.result["run_id"]
    app.switch_page("app_pages/results.py").run()
    bars = next(c for c in app.get("plotly_chart") if "Perplexity per run" in c.proto.spec)
    assert f"#{run_id} wanda 0.5" in bars.proto.spec and "2x16 seed 0" in bars.proto.spec
    next(b for b in app.button if b.label == "Measure the dense model on this evaluation").click().run()
    dense = _wait(manager().get(app.session_state["dense_job"]))
    assert dense.status == "finished", dense.error
    assert dense.result["job"]["eval_windows"] == 1 and dense.result["perplexity"][0]["windows"] == 1
    app.run()
    bars = next(c for c in app.get("plotly_chart") if "Perplexity per run" in c.proto.spec)
    dense_ppl = dense.result["perplexity"][0]["ppl"]
    assert f"dense model {dense_ppl:.2f}" in bars.proto.spec
    assert any("same evaluation (heldout, 1 x 16 tokens" in c.value for c in app.caption), [c.value for c in app.caption]
    # a shared link reopens a comparison
    linked = AppTest.from_file(APP, default_timeout=120)
    linked.query_params["runs"] = str(run_id)
    linked.run()
    linked.switch_page("app_pages/results.py").run()
    assert not linked.exception
    assert next(m for m in linked.multiselect if m.label == "Runs").value == [run_id]
    assert any("Per-block sparsity" in c.proto.spec for c in linked.get("plotly_chart"))


def test_run_labels_say_source_and_draw():
    from calib_core.data import sets

    run = {"id": 7, "method": "wanda", "sparsity": "2:4", "calibration": "set:mine",
           "record": {"job": {"calib": "set:mine", "nsamples": 8, "seqlen": 128, "seed": 3}}}
    sets.save_set("mine", [{"text": "a text"}])
    assert run_label(run) == "#7 wanda 2:4 · set:mine · 8x128 seed 3"
    sets.delete_set("mine")
    assert run_label(run) == "#7 wanda 2:4 · set:mine (deleted) · 8x128 seed 3"
    dense = {"id": 1, "method": "dense", "sparsity": "0.0", "calibration": None, "record": None}
    assert run_label(dense) == "#1 dense 0.0 · no data"


def test_the_dense_baseline_is_only_one_evaluated_the_same_way():
    def run(id_, method, windows, ppl, model="m"):
        return {"id": id_, "method": method, "status": "finished", "model": model, "record": {"perplexity": [
            {"source": "builtin:wiki", "ppl": ppl, "protocol": "heldout", "seqlen": 128, "windows": windows}]}}

    pruned = run(3, "wanda", 8, 30.0)
    assert dense_baseline([run(1, "dense", 4, 10.0), pruned], pruned, "builtin:wiki") is None  # other windows
    assert dense_baseline([run(1, "dense", 8, 10.0, model="other"), pruned], pruned, "builtin:wiki") is None
    runs = [run(1, "dense", 8, 10.0), run(2, "dense", 8, 11.0), pruned]
    assert dense_baseline(runs, pruned, "builtin:wiki") == 11.0  # the latest matching one
    assert dense_baseline(runs, pruned, "builtin:news") is None


class _Tab:
    """A browser tab as app_ui.live sees it: its own session state."""

    def __init__(self):
        self.session_state = {}


class _RunningJob:
    def __init__(self, folder):
        self.folder, self.status, self.events = folder, "running", []

    @property
    def done(self):
        return self.status not in ("queued", "running")


def test_tabs_watching_one_job_share_the_chart_redraws(tmp_path, monkeypatch):
    from app_ui import live as ui_live

    clock = [1000.0]
    monkeypatch.setattr(ui_live.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ui_live, "_VIEWERS", {})
    built = []

    def build(events):
        built.append(len(events))
        return {"blocks": len(events)}

    job = _RunningJob(tmp_path / "job")

    def refresh(tab):  # one fragment rerun in `tab`: it is seen watching, then draws its charts
        monkeypatch.setattr(ui_live, "st", tab)
        ui_live._seen_watching(job)
        return ui_live.figures_of(job, build)

    def watch(tabs, seconds):
        """Each tab refreshes every REFRESH_SECONDS while a block ends every second: how many times each
        tab was sent new figures."""
        shown, changes = [tab.session_state["_shown_figures"].figures for tab in tabs], [0] * len(tabs)
        for _ in range(int(seconds / ui_live.REFRESH_SECONDS)):
            clock[0] += ui_live.REFRESH_SECONDS
            job.events += [BlockRecord(len(job.events), "block", 0.5, "unstructured", 0.5, None, 1.0)
                           for _ in range(int(ui_live.REFRESH_SECONDS))]
            for i, tab in enumerate(tabs):
                figures = refresh(tab)
                changes[i] += figures is not shown[i]
                shown[i] = figures
        return changes

    tabs = [_Tab(), _Tab(), _Tab()]
    assert [refresh(tab) for tab in tabs] == [{"blocks": 0}] * 3
    clock[0] += 0.5
    job.events.append(BlockRecord(0, "block", 0.5, "unstructured", 0.5, None, 1.0))
    assert [refresh(tab) for tab in tabs] == [{"blocks": 1}] * 3  # the first block shows at once
    assert ui_live.viewers(job) == 3

    def turns(viewers, seconds=60):  # a tab's turn comes at its first refresh CHART_REFRESH_SECONDS x viewers on
        return int(seconds // (math.ceil(ui_live.CHART_REFRESH_SECONDS * viewers / ui_live.REFRESH_SECONDS)
                               * ui_live.REFRESH_SECONDS))

    # three tabs: each gets new figures every 3 x CHART_REFRESH_SECONDS
    assert watch(tabs, 60) == [turns(3)] * 3 and turns(3) < turns(1)
    assert len(built) == 2 + turns(3)  # built when a tab's turn came: not for each of the blocks, nor for each tab
    # two tabs close: once they time out, the one left gets new figures every CHART_REFRESH_SECONDS (one
    # turn more or less while the others time out)
    assert abs(watch(tabs[:1], 60)[0] - turns(1)) <= 1 and turns(1) > turns(3) + 1 and ui_live.viewers(job) == 1
    # a finished job's figures are final at once
    job.events.append(BlockRecord(len(job.events), "block", 0.5, "unstructured", 0.5, None, 1.0))
    job.status = "finished"
    assert refresh(tabs[1]) == {"blocks": len(job.events)}


def test_every_page_the_sidebar_trusts_to_follow_a_job_does_follow_it():
    """The sidebar stops refreshing on these pages while their kind of job is pending: each must call
    live_view for that kind, whatever else it shows."""
    import re

    from app_ui.live import LIVE_KINDS, page_kind

    for page, kind in LIVE_KINDS.items():
        path = Path(APP).parent / "app_pages" / f"{page}.py"
        view = path.read_text()
        assert page_kind(str(path)) == kind
        assert "KIND = page_kind(__file__)" in view and re.search(r'live_view\("\w+", KIND', view), page
