"""Every page renders (streamlit AppTest), and the prune page runs a job on a tiny model."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from calib_core.jobs import manager
from tests.tiny import save_tiny_folder

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["app_pages/home.py", "app_pages/model.py", "app_pages/calibration.py", "app_pages/similarity.py", "app_pages/prune.py",
         "app_pages/results.py", "app_pages/inside.py", "app_pages/advisor.py", "app_pages/sweeps.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page):
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception


def _app_on_tiny_model(tmp_path, page: str) -> AppTest:
    """The app with a tiny local model selected, opened on `page`."""
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["model_spec"] = str(save_tiny_folder(tmp_path / "tiny"))
    app.run()
    app.switch_page(page).run()
    return app


def _number(app, label: str):
    return next(n for n in app.number_input if n.label == label)


def _wait(job, seconds=60):
    deadline = time.time() + seconds
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    return job


def test_prune_flow_on_tiny_model(tmp_path):
    app = _app_on_tiny_model(tmp_path, "app_pages/prune.py")
    assert next(s for s in app.selectbox if s.label == "Calibration source").value == "builtin:wiki"
    _number(app, "nsamples").set_value(2)
    _number(app, "seqlen").set_value(16)
    for seed in (0, 1):  # two calibration draws of the same source
        _number(app, "seed").set_value(seed)
        next(b for b in app.button if b.label == "Start pruning").click().run()
        job = _wait(manager().get(app.session_state["prune_job"]))
        assert job.status == "finished", job.error
    app.switch_page("app_pages/results.py").run()
    assert not app.exception
    table = app.dataframe[0].value
    assert table["status"].tolist() == ["finished", "finished"] and table["seed"].tolist() == [0, 1]
    # mask agreement between the two runs: a Jaccard strictly between "disjoint" and "identical"
    jaccard = float(next(m for m in app.metric if m.label.startswith("Jaccard")).value)
    assert 0.3 < jaccard < 1.0


def test_prune_page_keeps_settings_across_pages():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/prune.py").run()
    _number(app, "nsamples").set_value(3).run()
    app.switch_page("app_pages/results.py").run()
    app.switch_page("app_pages/prune.py").run()
    assert _number(app, "nsamples").value == 3


def test_similarity_page_scores_sets_on_tiny_model(tmp_path):
    app = _app_on_tiny_model(tmp_path, "app_pages/similarity.py")
    app.number_input[0].set_value(3)  # texts per set
    app.number_input[1].set_value(32)  # tokens per text
    next(b for b in app.button if b.label == "Score").click().run()
    job = _wait(manager().get(app.session_state["sim_job"]))
    assert job.status == "finished", job.error
    assert [e.sets_done for e in job.events] == [1, 2]
    app.run()
    assert not app.exception
    table, _summary = job.result
    assert sorted(set(table["set"])) == ["builtin:news", "builtin:wiki"] and len(table) == 6
    assert app.get("plotly_chart")  # the violin of the chosen metric is drawn


def test_sweeps_page_runs_a_grid_and_tests_two_sources(tmp_path):
    app = _app_on_tiny_model(tmp_path, "app_pages/sweeps.py")
    app.text_input[0].set_value("page-sweep")
    app.text_input[1].set_value("2")  # calibration samples
    app.number_input[0].set_value(3)  # seeds
    app.number_input[1].set_value(16)  # tokens per sample
    app.number_input[2].set_value(1)  # eval windows
    next(m for m in app.multiselect if m.label == "Sparsities / patterns").set_value(["0.5"])
    next(b for b in app.button if b.label == "Start sweep").click().run()
    assert "7 points, 0 already finished" in " ".join(m.value for m in app.markdown)  # wanda 2 sources x 3, magnitude
    next(b for b in app.button if b.label == "Run this grid").click().run()
    job = _wait(manager().get(app.session_state["sweep_job"]), 600)  # a bound for a loaded machine, not a target
    assert job.status == "finished", job.error
    assert job.result.ran == 7 and not job.result.failed
    app.run()
    assert not app.exception
    charts = [c.proto.spec for c in app.get("plotly_chart")]
    assert len(charts) >= 4  # bars, spread, violins, calibrate-on-A x evaluate-on-B
    assert any("calibrate on a row, evaluate on a column" in spec for spec in charts)
    verdict = " ".join(m.value for m in app.markdown if "Welch t" in m.value)
    assert "builtin:news" in verdict and "builtin:wiki" in verdict and "p = " in verdict


def test_a_strategy_chosen_on_the_calibration_page_runs_from_the_prune_page(tmp_path):
    from calib_core.data.strategies import STRATEGIES

    app = _app_on_tiny_model(tmp_path, "app_pages/calibration.py")
    picker = next(s for s in app.selectbox if s.label == "Calibration strategy")
    assert picker.options[0].startswith("random: ") and len(picker.options) == len(STRATEGIES)
    picker.set_value("least-ppl").run()
    pool = next(n for n in app.number_input if n.label == "pool factor")
    pool.set_value(0).run()  # out of range: said under the field
    assert any("pool factor must be from 1 to 1000" in e.value for e in app.error)
    pool.set_value(3).run()
    assert app.session_state["prune_form"]["strategy_options"] == {"pool_factor": 3}
    app.switch_page("app_pages/prune.py").run()
    assert next(s for s in app.selectbox if s.label == "Calibration strategy").value == "least-ppl"
    assert next(n for n in app.number_input if n.label == "pool factor").value == 3
    _number(app, "nsamples").set_value(2)
    _number(app, "seqlen").set_value(16)
    next(b for b in app.button if b.label == "Start pruning").click().run()
    job = _wait(manager().get(app.session_state["prune_job"]), 300)
    assert job.status == "finished", job.error
    strategy = job.result["calibration"]["strategy"]
    assert strategy["name"] == "least-ppl" and strategy["pool"]["size"] == 6 and len(strategy["chosen"]) == 2
    app.switch_page("app_pages/results.py").run()
    assert not app.exception
    assert app.dataframe[0].value["strategy"].tolist() == ["least-ppl (pool_factor=3)"]


def test_the_mix_builder_makes_a_checked_mix_source():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/calibration.py").run()
    next(n for n in app.number_input if n.label == "builtin:books").set_value(0.0).run()
    next(n for n in app.number_input if n.label == "random rows").set_value(0.1).run()
    spec = "mix:builtin:wiki=1,builtin:news=1,builtin:code=1,random=0.1"
    assert spec in [c.value for c in app.code]
    next(b for b in app.button if b.label == "Use this mix as the calibration source").click().run()
    assert app.session_state["calib_source"] == spec
    for source in ("builtin:wiki", "builtin:news", "builtin:code"):
        next(n for n in app.number_input if n.label == source).set_value(0.0).run()
    assert any("needs at least one source with a weight > 0" in e.value for e in app.error)


def test_the_sweeps_page_sweeps_strategies():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/sweeps.py").run()
    next(m for m in app.multiselect if m.label == "Calibration strategies").set_value(["random", "unique-tokens"])
    next(m for m in app.multiselect if m.label == "Calibration sources").set_value(["builtin:wiki"])
    next(b for b in app.button if b.label == "Start sweep").click().run()
    grid = app.session_state["sweep_grid"]
    assert grid.strategies == ["random", "unique-tokens"]
    chosen = [p.strategy for p in grid.points() if p.config.method == "wanda"]
    assert chosen.count("random") == chosen.count("unique-tokens") == len(chosen) // 2 > 0


@pytest.fixture
def shared_app(tmp_path, monkeypatch):
    """The app as served on a network address: visitors are confined to a workspace folder."""
    monkeypatch.setenv("CALIB_LAB_SHARED", "1")
    monkeypatch.setenv("CALIB_LAB_WORKSPACE", str(tmp_path / "workspace"))
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    return app


def _errors(app) -> str:
    return " ".join(e.value for e in app.error)


def test_shared_app_does_not_read_files_outside_its_workspace(shared_app, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's secret " * 50)
    app = shared_app
    assert "Shared app" in " ".join(w.value for w in app.sidebar.warning)
    app.switch_page("app_pages/calibration.py").run()
    app.radio[0].set_value("Hub dataset").run()
    app.text_input[0].set_value(f"file:{secret}").run()
    next(b for b in app.button if b.label == "Stream").click().run()
    assert "inside the workspace folder" in _errors(app)
    assert not any("secret" in t.value for t in app.code)  # nothing previewed
    inside = tmp_path / "workspace" / "mine.txt"
    inside.write_text("a text that the visitor put in the workspace " * 20)
    app.text_input[0].set_value("file:mine.txt").run()
    next(b for b in app.button if b.label == "Stream").click().run()
    assert not app.error and any("visitor put" in t.value for t in app.code)


def test_shared_app_confines_saves_sizes_and_remote_code(shared_app, tmp_path):
    app = shared_app
    app.switch_page("app_pages/model.py").run()
    assert not [c for c in app.checkbox if "trust_remote_code" in c.label]
    app.switch_page("app_pages/prune.py").run()
    next(t for t in app.text_input if t.label.startswith("Save the pruned model")).set_value(str(tmp_path / "out"))
    next(b for b in app.button if b.label == "Start pruning").click().run()
    assert "inside the workspace folder" in _errors(app) and "prune_job" not in app.session_state
    app.switch_page("app_pages/sweeps.py").run()
    app.text_input[1].set_value("100000")  # calibration samples
    next(b for b in app.button if b.label == "Start sweep").click().run()
    assert "nsamples 100000 is above this server's limit of 256" in _errors(app) and "sweep_grid" not in app.session_state


def test_local_app_prune_page_refuses_a_non_empty_save_folder_at_once(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    app = _app_on_tiny_model(tmp_path, "app_pages/prune.py")
    next(t for t in app.text_input if t.label.startswith("Save the pruned model")).set_value(str(target))
    next(b for b in app.button if b.label == "Start pruning").click().run()
    assert "is not empty" in _errors(app) and "prune_job" not in app.session_state
    assert (target / "keep.txt").read_text() == "mine"


def test_prune_page_reads_the_method_registry_and_keeps_every_setting():
    from calib_core.prune.methods import METHODS

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/prune.py").run()

    def box(label):
        return next(s for s in app.selectbox if s.label == label)

    assert box("Method").options == list(METHODS)
    box("Method").set_value("dsnot").run()
    assert box("Base").options == ["wanda", "sparsegpt"]  # no magnitude: the config would refuse it
    box("DSnoT sublayers").set_value("all").run()
    box("propagate").set_value("dense").run()
    next(t for t in app.text_input if t.label.startswith("Save the pruned model")).set_value("kept-folder").run()
    app.switch_page("app_pages/results.py").run()
    app.switch_page("app_pages/prune.py").run()
    assert box("Method").value == "dsnot" and box("DSnoT sublayers").value == "all"
    assert box("propagate").value == "dense"
    assert next(t for t in app.text_input if t.label.startswith("Save the pruned model")).value == "kept-folder"
    box("Method").set_value("wanda").run()
    assert box("Base").disabled


def test_the_prune_page_shows_the_chosen_methods_options_and_its_bases_from_the_registry():
    from calib_core.prune.methods import ENGINE_OPTIONS, METHODS, options_of

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/prune.py").run()
    fixed = {"nsamples", "seqlen", "seed", "Eval windows per source"}
    for method, base in [("wanda", None), ("dsnot", "sparsegpt"), ("owl", "sparsegpt"), ("sparsegpt", None)]:
        next(s for s in app.selectbox if s.label == "Method").set_value(method).run()
        if base:
            next(s for s in app.selectbox if s.label == "Base").set_value(base).run()
        shown = {w.label for w in app.number_input} | {s.label for s in app.selectbox}
        expected = {o.title for o in options_of(method, base) + ENGINE_OPTIONS}
        others = {o.title for m in METHODS.values() for o in m.options} - expected
        assert expected <= shown and not others & shown, (method, base, others & shown)
        assert fixed <= shown
    blocksize = next(n for n in app.number_input if n.label == "SparseGPT blocksize")
    blocksize.set_value(5000).run()  # above the registry's bound: said, and the button stays off
    assert any("SparseGPT blocksize must be from 1 to 4096" in e.value for e in app.error)
    assert next(b for b in app.button if b.label == "Start pruning").disabled


def test_a_forgotten_job_is_explained_not_a_crash():
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["prune_job"] = 10**9  # ended long ago and dropped from memory
    app.run()
    app.switch_page("app_pages/prune.py").run()
    assert not app.exception
    assert any("ended a while ago" in c.value for c in app.caption)


def test_the_model_page_lists_both_bundled_models_with_their_terms():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/model.py").run()
    choice = next(s for s in app.selectbox if s.label == "Bundled model")
    assert choice.options == ["SmolLM2-135M-Instruct (smollm2-135m)", "Gemma 3 270M (gemma3-270m)"]
    assert any("Licence: apache-2.0." in c.value for c in app.caption)
    choice.set_value("gemma3-270m").run()
    assert any("Gemma Terms of Use" in c.value for c in app.caption)
    terms = next(b for b in app.get("download_button") if b.proto.label.startswith("Terms of use"))
    assert "GEMMA_TERMS.html" in terms.proto.label


def test_the_results_page_lists_the_runs_of_a_store_on_a_full_disk(small_tmpfs, monkeypatch):
    """Found by a reliability probe: with the data folder's disk full, the Results page failed with
    'disk I/O error'. It lists the runs and says why no new run can be recorded."""
    import gc

    from calib_core.runs import RunStore
    from tests.conftest import fill_disk

    store = RunStore(small_tmpfs / "runs.sqlite")
    run = store.start("smollm2-135m", {"method": "wanda", "sparsity": 0.5, "pattern": "unstructured"}, "builtin:wiki")
    store.finish(run, "finished", {"perplexity": [{"source": "builtin:wiki", "ppl": 21.5, "seqlen": 64, "windows": 2,
                                                   "tokens": 126, "protocol": "heldout", "seconds": 1.0}]})
    del store
    gc.collect()
    monkeypatch.setenv("CALIB_LAB_DATA", str(small_tmpfs))
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    fill_disk(small_tmpfs)
    app.switch_page("app_pages/results.py").run()
    assert not app.exception, app.exception
    assert app.dataframe[0].value["status"].tolist() == ["finished"]
    assert any("read-only" in w.value for w in app.warning)


def test_the_inside_page_shows_why_two_calibration_sets_pruned_differently(tmp_path):
    from calib_core.metrics import inside
    from calib_core.prune import PruneConfig
    from calib_core.runs import RunStore
    from calib_core.runs.pipeline import run_prune
    from calib_core.runs.spec import EvalSpec, RunSpec

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    ids = [run_prune(RunSpec(model=folder, calib=calib, nsamples=2, seqlen=16, config=PruneConfig(method="wanda"),
                             evaluation=EvalSpec(sources=["builtin:wiki"], windows=1)))["run_id"]
           for calib in ("builtin:wiki", "builtin:code")]
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/inside.py")
    app.query_params["a"], app.query_params["b"] = str(ids[0]), str(ids[1])
    app.run()
    assert not app.exception, app.exception
    block, module = inside.most_different_module(*(inside.open_run(RunStore(), i) for i in ids))
    assert [s.value for s in app.selectbox] == [ids[0], ids[1], block, module]  # where the masks differ most
    assert [h.value for h in app.subheader] == ["1. Channels", "2. Scores", "3. The mask", "4. Across the model",
                                              "5. Dense and pruned side by side"]
    assert any("activation norm" in m.value for m in app.markdown)
    next(b for b in app.button if b.label == "Continue the prompt").click().run()
    assert not app.exception, app.exception
    written = [t.value for t in app.text]
    assert len(written) == 3 and all(written)  # dense, run A, run B
    assert [m.value.split(" (")[0] for m in app.markdown if m.value.startswith("**") and " (" in m.value] == [
        "**dense**", f"**run {ids[0]}**", f"**run {ids[1]}**"]
    other = 1 - block
    app.selectbox[2].set_value(other).run()  # another block: the same module there, and the link follows
    assert not app.exception and app.query_params["block"] == str(other) and app.selectbox[3].value == module


def test_the_start_pages_demo_runs_and_links_to_the_comparison_and_the_layer(tmp_path, monkeypatch):
    from calib_core.experiments import demo
    from calib_core.runs import RunStore

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    real = demo.demo_grid
    monkeypatch.setattr(demo, "demo_grid", lambda model=None, device="auto": real(folder, device))  # tiny, not bundled
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception and not [p for p in app.get("page_link") if "Inside block" in p.proto.label]
    next(b for b in app.button if b.label == "Run the two-minute demo").click().run()
    job = _wait(manager().get(app.session_state["demo_job"]), 240)
    assert job.status == "finished", job.error
    app.run()
    assert not app.exception, app.exception
    links = {p.proto.label: p.proto.query_string for p in app.get("page_link")}
    roles = demo.demo_runs(demo.demo_grid(), RunStore())
    assert set(roles) == {"wiki", "code", "magnitude"}
    results = next(q for label, q in links.items() if label.startswith("1. Perplexity"))
    assert results == f"runs={roles['wiki']}%2C{roles['code']}%2C{roles['magnitude']}"
    layer = next(q for label, q in links.items() if label.startswith("2. Inside block"))
    assert layer.startswith(f"a={roles['wiki']}&b={roles['code']}&block=")
