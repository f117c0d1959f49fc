"""The defects a walkthrough of the app found, each as a test of what a user does (streamlit AppTest on
tiny models and the builtin corpora)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from calib_core.prune import PruneConfig
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.tiny import save_tiny_folder

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _prune(folder: str, calib: str = "builtin:wiki", method: str = "wanda", seed: int = 0, **kwargs) -> int:
    spec = RunSpec(model=folder, calib=calib, nsamples=2, seqlen=16, seed=seed, config=PruneConfig(method=method),
                   evaluation=EvalSpec(sources=["builtin:wiki"], windows=1))
    return run_prune(spec, **kwargs)["run_id"]


@pytest.fixture
def three_runs(tmp_path) -> tuple[str, list[int]]:
    folder = str(save_tiny_folder(tmp_path / "tiny"))
    return folder, [_prune(folder, calib) for calib in ("builtin:wiki", "builtin:code", "builtin:news")]


def _open(page: str, model_folder: str | None = None, **params) -> AppTest:
    """A new session opened on `page` at an address with `params` (a reload, a shared link)."""
    app = AppTest.from_file(APP, default_timeout=60)
    if model_folder is not None:
        app.session_state["model_spec"] = model_folder
    app.run()
    app.switch_page(page)
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, app.exception
    return app


def _results(**params) -> AppTest:
    return _open("app_pages/results.py", **params)


def _select(app, label: str):
    return next(s for s in app.selectbox if s.label == label)


def test_results_keeps_the_chosen_runs_when_a_background_run_finishes(three_runs):
    folder, ids = three_runs
    app = _results()
    _select(app, "Run A").set_value(ids[2]).run()
    _select(app, "Run B").set_value(ids[1]).run()
    next(s for s in app.multiselect if s.label == "Methods").set_value(["wanda"]).run()
    _prune(folder, "builtin:books")  # a run finishes in the background: the options change
    app.run()
    assert not app.exception, app.exception
    assert (_select(app, "Run A").value, _select(app, "Run B").value) == (ids[2], ids[1])
    assert (app.query_params["a"], app.query_params["b"]) == (str(ids[2]), str(ids[1]))
    assert next(s for s in app.multiselect if s.label == "Methods").value == ["wanda"]
    # and the address reopens the same view in a new session (a reload, a shared link, a server restart)
    again = _results(a=str(ids[2]), b=str(ids[1]), methods="wanda")
    assert (_select(again, "Run A").value, _select(again, "Run B").value) == (ids[2], ids[1])


def test_results_says_who_made_each_run_and_colours_perplexity_by_source(three_runs):
    folder, ids = three_runs
    app = _results()
    table = app.dataframe[0].value
    assert set(table["origin"]) == {"library"}
    columns = list(app.dataframe[0].proto.column_order)
    assert columns.index("ppl builtin:wiki") < columns.index("status")  # the measured numbers stay in view
    figure = app.get("plotly_chart")[0].proto.spec
    assert '"legendgroup":"builtin:code' in figure.replace(", ", ",") and "calibration source" in figure


def test_results_tags_hides_and_deletes_runs_with_a_confirmation(three_runs):
    folder, ids = three_runs
    store = RunStore()
    app = _results()
    manage = next(s for s in app.multiselect if s.label == "Runs to change")
    manage.set_value([ids[0]]).run()
    next(t for t in app.text_input if t.label.startswith("Tags")).set_value("baseline, wiki").run()
    next(b for b in app.button if b.label == "Set tags").click().run()
    assert store.get(ids[0])["tags"] == ["baseline", "wiki"]
    assert app.dataframe[0].value.set_index("id").loc[ids[0], "tags"] == "baseline, wiki"
    next(s for s in app.multiselect if s.label == "Runs to change").set_value([ids[1]]).run()
    next(b for b in app.button if b.label == "Hide").click().run()
    assert ids[1] not in set(app.dataframe[0].value["id"]) and store.get(ids[1])["hidden"]
    next(s for s in app.multiselect if s.label == "Runs to change").set_value([ids[2]]).run()
    delete = next(b for b in app.button if b.label == "Delete")
    assert delete.disabled  # not before the confirmation
    next(c for c in app.checkbox if c.label.startswith("Yes, delete")).check().run()
    next(b for b in app.button if b.label == "Delete").click().run()
    assert not app.exception, app.exception
    assert any(f"Deleted run(s) #{ids[2]}" in s.value for s in app.success)
    assert [r["id"] for r in store.list()] == ids[:2] and not store.mask_path(ids[2]).exists()


def test_results_shows_what_two_runs_did_differently(three_runs):
    folder, ids = three_runs
    app = _results(a=str(ids[0]), b=str(ids[1]))
    differing = app.dataframe[1].value
    assert differing["setting"].tolist() == ["calib"]
    assert differing[f"run {ids[0]}"].tolist() == ["builtin:wiki"]
    assert differing[f"run {ids[1]}"].tolist() == ["builtin:code"]


def _prune_page(tmp_path=None, **params) -> AppTest:
    folder = str(save_tiny_folder(tmp_path / "tiny")) if tmp_path is not None else None
    return _open("app_pages/prune.py", folder, **params)


def _number(app, label: str):
    return next(n for n in app.number_input if n.label.startswith(label))


def _start(app):
    return next(b for b in app.button if b.label == "Start pruning")


def test_the_prune_form_comes_back_after_a_reload_or_a_server_restart():
    app = _prune_page()
    _select(app, "Method").set_value("sparsegpt").run()
    _number(app, "Sparsity").set_value(0.73).run()  # typed, not only stepped
    _number(app, "nsamples").set_value(4).run()
    _select(app, "Calibration source").set_value("builtin:code").run()
    address = {name: app.query_params[name] for name in app.query_params}
    assert address["method"] == "sparsegpt" and address["calib"] == "builtin:code"
    fresh = _prune_page(**address)  # a new session (reload, restart) opened on the same address
    assert _select(fresh, "Method").value == "sparsegpt"
    assert _number(fresh, "Sparsity").value == pytest.approx(0.73)
    assert _number(fresh, "nsamples").value == 4
    assert _select(fresh, "Calibration source").value == "builtin:code"


def test_the_sparsity_is_shown_for_what_runs_and_an_n_m_pattern_says_its_own():
    app = _prune_page()
    _number(app, "Sparsity").set_value(0.6).run()
    _select(app, "Method").set_value("magnitude").run()
    assert _number(app, "Sparsity").value == pytest.approx(0.6) and not _number(app, "Sparsity").disabled
    _select(app, "Pattern").set_value("2:4").run()
    assert _number(app, "Sparsity").value == 0.5 and _number(app, "Sparsity").disabled


def test_the_calibration_source_is_picked_or_typed_and_checked_before_any_job(tmp_path):
    from calib_core.data import sets

    sets.save_set("mine", [{"text": "a saved text " * 40}])
    app = _prune_page(tmp_path)
    picker = _select(app, "Calibration source")
    assert picker.options[:4] == ["builtin:wiki", "builtin:news", "builtin:books", "builtin:code"]
    assert "set:mine" in picker.options
    picker.set_value("another source (type it)").run()
    typed = next(t for t in app.text_input if t.label == "Source spec")
    for spec, said in [("builtin:wikii", "No builtin corpus 'wikii'"), ("set:nope", "No saved set 'nope'"),
                       (f"file:{tmp_path}/missing.txt", "does not exist"),
                       ("mix:builtin:wiki=1,builtin:cod=1", "No builtin corpus 'cod'"), ("wiki", "Bad source 'wiki'")]:
        typed.set_value(spec).run()
        assert any(said in e.value for e in app.error), (spec, [e.value for e in app.error])
        assert _start(app).disabled and "prune_job" not in app.session_state
    typed.set_value("mix:builtin:wiki=1,builtin:code=1").run()
    assert not app.error and not _start(app).disabled
    assert "**Calibration:** `mix:builtin:wiki=1,builtin:code=1`" in [m.value for m in app.sidebar.markdown]


def test_an_uploaded_txt_is_split_into_texts_as_the_same_text_pasted_is(tmp_path):
    from calib_core.data.documents import read_upload
    from calib_core.data.text_files import split_at_blank_lines

    paragraph = "A paragraph of calibration text that runs on for a while. " * 8
    for count in (1, 3, 60_000):  # one text, a few, and a file of about 28 MB
        content = "\r\n\r\n".join(f"{i}: {paragraph}" for i in range(count)) + "\n  \n"
        path = tmp_path / f"upload-{count}.txt"
        path.write_text(content, encoding="utf-8")
        uploaded = read_upload(path)
        assert uploaded == split_at_blank_lines(content) and len(uploaded) == count
        assert uploaded[-1].startswith(f"{count - 1}: ")
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/calibration.py").run()
    next(r for r in app.radio if r.label == "From").set_value("Paste text").run()
    next(t for t in app.text_area if t.label.startswith("Texts")).set_value("one\n\ntwo\n \nthree").run()
    assert any("3 texts from `pasted`" in m.value for m in app.markdown)
    lengths = next(c for c in app.get("plotly_chart") if "Length of 3 texts" in c.proto.spec).proto.spec
    assert '"dtick":1' in lengths.replace(" ", "")  # counts of 3 texts in whole steps, not 0.2
    next(t for t in app.text_input if t.label == "Save as set").set_value("three").run()
    next(b for b in app.button if b.label == "Save set").click().run()
    assert "**Calibration:** `set:three`" in [m.value for m in app.sidebar.markdown]  # at once, not a rerun later


def test_deleting_a_saved_set_asks_first_says_what_it_removed_and_its_runs_show_it_deleted(tmp_path):
    from calib_core.data import sets

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    sets.save_set("mine", [{"text": "a saved text that is long enough to calibrate on " * 10}])
    used = _prune(folder, "set:mine")
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/calibration.py").run()
    assert any(f"1 run(s) used it (#{used})" in m.value for m in app.markdown)
    assert sets.list_sets() == ["mine"]  # opening the confirmation deletes nothing
    next(b for b in app.button if b.label == "Yes, delete set:mine").click().run()
    assert not app.exception, app.exception
    assert sets.list_sets() == []
    assert any(f"Deleted set:mine. Runs #{used} now show it as deleted." in s.value for s in app.success)
    app.switch_page("app_pages/results.py").run()
    assert app.dataframe[0].value["calibration"].tolist() == ["set:mine (deleted)"]


def test_a_queued_job_says_what_it_waits_for_and_empty_charts_say_what_they_wait_for(monkeypatch):
    from types import SimpleNamespace

    from app_ui import live
    from calib_core.experiments.run_figures import live_prune_charts
    from calib_core.prune.events import StageEvent

    ahead = {"count": 0}
    monkeypatch.setattr(live, "manager", lambda: SimpleNamespace(position=lambda job: ahead["count"]))
    job = SimpleNamespace(status="queued", device="cpu")
    assert live.job_state(job) == "starting on cpu"  # nothing ahead: not "waiting for 0 job(s)"
    ahead["count"] = 2
    assert live.job_state(job) == "queued behind 2 job(s) on cpu"
    assert live.job_state(SimpleNamespace(status="running", device="cpu")) == "running"

    loading = live_prune_charts([])["sparsity"].figure
    assert [a.text for a in loading.layout.annotations] == ["loading the model and the data"]
    charts = live_prune_charts([StageEvent("prune", 0, 30, 0.0)])
    for name in ("sparsity", "seconds", "recon_error"):
        figure = charts[name].figure
        assert tuple(figure.layout.xaxis.range) == (-0.5, 29.5), name  # the model's 30 blocks, not -1 .. 5
        assert [a.text for a in figure.layout.annotations] == ["waiting for the first block"]
    assert tuple(charts["sparsity"].figure.layout.yaxis.range) == (0, 1)


def test_progress_lines_have_no_zero_rate_and_sweeps_have_an_eta():
    from calib_core.data.selfgen import GenerationProgress
    from calib_core.jobs.progress import generation_line, sweep_progress
    from calib_core.runs.events import PipelineEvent

    first = GenerationProgress(0, 8, 0.0, "", batch_tokens=12, max_new_tokens=64)
    assert generation_line(first) == "0/8 texts done; first batch in progress: 12/64 new tokens"
    later = GenerationProgress(4, 8, 31.25, "a text", max_new_tokens=64)
    assert generation_line(later) == "4/8 texts done, 31.2 tokens/s"

    plan = PipelineEvent("sweep", "sweep s: 6 points, 2 already finished", {"points": 6, "todo": 4}, at=100.0)
    points = [PipelineEvent("sweep", f"point {i}/4: wanda 0.5 on builtin:wiki", {"key": str(i)}, at=100.0 + 30 * i)
              for i in (1, 2, 3)]
    assert sweep_progress([plan], "running", now=101.0).text == "4 points to run: loading the model"
    progress = sweep_progress([plan, *points], "running", now=200.0)
    # two points finished in the 70 s since the first began: 35 s each, two left
    assert progress.fraction == 0.5
    assert progress.text == "point 3/4: wanda 0.5 on builtin:wiki · 2 of 4 finished, 70 s, about 70 s left"
    assert sweep_progress([plan, *points], "finished").text == "Finished: 4 of 4 points"


def test_the_sweeps_form_names_a_bad_sample_count_and_the_app_has_no_deploy_button():
    import tomllib

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/sweeps.py").run()
    next(t for t in app.text_input if t.label.startswith("Calibration samples")).set_value("4, abc")
    next(b for b in app.button if b.label == "Start sweep").click().run()
    errors = " ".join(e.value for e in app.error)
    assert "Calibration samples: 'abc' is not a whole number" in errors and "int()" not in errors
    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"  # Streamlit's Deploy button is a developer option


def test_a_cancelled_run_says_nothing_was_kept_and_asks_for_no_reload(tmp_path):
    from calib_core.jobs import manager, tasks
    from tests.test_app import _wait

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    spec = RunSpec(model=folder, nsamples=2, seqlen=16, evaluation=EvalSpec(sources=["builtin:wiki"], windows=1))
    job = manager().submit("to cancel", tasks.prune, spec, kind="prune")
    job.cancel()
    assert _wait(job, 120).status == "cancelled"
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["prune_job"] = job.id
    app.run()
    app.switch_page("app_pages/prune.py").run()
    said = " ".join(w.value for w in app.warning)
    assert "nothing was saved" in said and "loads it afresh" in said
    assert "reload" not in " ".join(e.value for e in app.error).lower()


def test_calibrate_on_a_evaluate_on_b_is_relative_to_each_columns_best_with_seeds_and_significance():
    import pandas as pd

    from calib_core.experiments.stats import transfer_table
    from calib_core.experiments.sweep_figures import transfer_heatmap

    rows = []
    for seed in range(4):
        jitter = 0.1 * seed
        for source, wiki, code in (("builtin:wiki", 20 + jitter, 13 + jitter), ("builtin:code", 30 + jitter, 10 + jitter),
                                   ("builtin:news", 20.05 + jitter, 14 - jitter)):
            rows.append({"method": "wanda", "setting": "50%", "nsamples": 8, "seed": seed, "calibration": source,
                         "ppl builtin:wiki": wiki, "ppl builtin:code": code, "ppl": (wiki * code) ** 0.5})
    rows.append({"method": "wanda", "setting": "60%", "nsamples": 8, "seed": 0, "calibration": "builtin:wiki",
                 "ppl builtin:wiki": 99.0, "ppl builtin:code": 99.0, "ppl": 99.0})  # another setting: left out
    table = transfer_table(pd.DataFrame(rows), "wanda", "50%").set_index(["calibration", "domain"])
    assert set(table.index.get_level_values("domain")) == {"builtin:wiki", "builtin:code"}  # never the mean "ppl"
    wiki_on_wiki, code_on_wiki = table.loc[("builtin:wiki", "builtin:wiki")], table.loc[("builtin:code", "builtin:wiki")]
    assert wiki_on_wiki["relative"] == 1.0 and wiki_on_wiki["best"] == "builtin:wiki" and wiki_on_wiki["n"] == 4
    assert code_on_wiki["relative"] == pytest.approx(30.15 / 20.15) and code_on_wiki["p_vs_best"] < 0.001
    assert table.loc[("builtin:news", "builtin:wiki"), "p_vs_best"] > 0.05  # 0.25% apart: seed noise
    assert table.loc[("builtin:code", "builtin:code"), "best"] == "builtin:code"
    figure = transfer_heatmap(pd.DataFrame(rows), "wanda", "50%")
    heat = figure.data[0]
    assert list(heat.y) == ["builtin:wiki", "builtin:code", "builtin:news"] and list(heat.x) == ["builtin:wiki",
                                                                                                "builtin:code"]
    assert heat.text[0][0] == "best" and heat.text[1][0] == f"+{(30.15 / 20.15 - 1) * 100:.1f}% *"
    assert heat.text[2][0] == f"+{(20.2 / 20.15 - 1) * 100:.1f}%"  # no star: within seed noise
    assert "over 4 seed(s)" in heat.customdata[1][0] and "Welch p" in heat.customdata[1][0]


def _timed_run(run_id: int, model: str, method: str, nsamples: int, seqlen: int, windows: int, prune: float,
               evaluation: float, strategy: str = "random", dtype: str = "float32") -> dict:
    return {"id": run_id, "status": "finished", "record": {
        "job": {"model": model, "dtype": dtype, "nsamples": nsamples, "seqlen": seqlen, "eval": ["builtin:wiki"],
                "eval_windows": windows, "strategy": strategy},
        "config": {"method": method, "base": None},
        "timings": {"load_model": 2.0, "calibration": 1.0, "prune_total": prune, "eval": evaluation}}}


def test_time_estimates_come_from_this_machines_runs_scaled_by_what_a_run_does():
    from calib_core.experiments.sweeps import SweepGrid
    from calib_core.runs.estimate import estimate_run, estimate_sweep

    runs = [_timed_run(1, "m", "wanda", 8, 128, 4, prune=10.0, evaluation=4.0),
            _timed_run(2, "m", "wanda", 8, 128, 4, prune=12.0, evaluation=4.0),
            _timed_run(3, "m", "wanda", 8, 128, 4, prune=11.0, evaluation=4.0, dtype="bfloat16"),  # another dtype
            _timed_run(4, "other", "wanda", 8, 128, 4, prune=99.0, evaluation=99.0)]
    spec = RunSpec(model="m", nsamples=16, seqlen=128, config=PruneConfig(method="wanda"),
                   evaluation=EvalSpec(sources=["builtin:wiki", "builtin:code"], windows=4))
    estimate = estimate_run(spec, runs)
    # load 2 + calibration 1 + prune (median 11 s per 1024 tokens) x 2 + eval 1 s per window x 8
    assert estimate.seconds == pytest.approx(2 + 1 + 22 + 8)
    assert "from 2 earlier wanda run(s)" in estimate.describe()
    assert estimate_run(replace_method(spec, "sparsegpt"), runs).seconds is None
    unseen = estimate_run(RunSpec(model="m", nsamples=16, seqlen=128, strategy="least-ppl",
                                  config=PruneConfig(method="wanda")), runs)
    assert unseen.seconds is None and "by least-ppl" in unseen.describe()
    grid = SweepGrid.from_dict(dict(name="g", model="m", calibration=["builtin:wiki"], methods=["wanda"],
                                    sparsities=[0.5], nsamples=[8], seqlen=128, seeds=[0, 1, 2],
                                    eval=["builtin:wiki"], eval_windows=4, dtype="float32"))
    points = grid.points()
    per_point = 1 + 11 + 4
    assert estimate_sweep(grid, runs).seconds == pytest.approx(2 + 3 * per_point)  # the model loads once
    assert estimate_sweep(grid, runs, {points[0].key}).seconds == pytest.approx(2 + 2 * per_point)
    assert estimate_sweep(grid, runs, {p.key for p in points}).seconds == 0


def replace_method(spec, method):
    from dataclasses import replace

    return replace(spec, config=PruneConfig(method=method))


def test_the_start_page_tells_the_story_and_its_presets_fill_the_forms():
    from calib_core.experiments.presets import PRESETS

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    links = [p.proto.label for p in app.get("page_link")]
    assert links[:5] == ["1. Model", "2. Calibration data", "3. Similarity", "4. Prune", "5. Results"]
    said = " ".join(m.value for m in app.markdown)
    for preset in PRESETS:
        assert preset.question in said
    assert sum("No time estimate yet" in c.value for c in app.caption) == 2  # a fresh machine: no pace to go by
    next(b for b in app.button if b.key == "preset-source").click().run()
    assert not app.exception, app.exception
    assert next(m for m in app.multiselect if m.label == "Calibration sources").value == ["builtin:wiki", "builtin:code"]
    assert next(m for m in app.multiselect if m.label == "Sparsities / patterns").value == ["0.5", "0.7"]
    assert next(t for t in app.text_input if t.label == "Sweep name").value == "preset-wiki-vs-code"
    next(b for b in app.button if b.label == "Start sweep").click().run()
    said = " ".join(m.value for m in app.markdown)
    assert "Grid **preset-wiki-vs-code**: 8 points" in said
    app.switch_page("app_pages/home.py").run()
    next(b for b in app.button if b.key == "preset-similarity").click().run()
    assert next(m for m in app.multiselect if m.label == "Sets to compare").value == [
        "builtin:wiki", "builtin:news", "builtin:books", "builtin:code"]


def test_the_start_page_estimates_a_preset_from_earlier_runs(tmp_path):
    from calib_core import assets
    from calib_core.devices import native_dtype

    store = RunStore()
    config = {"method": "wanda", "sparsity": 0.5, "pattern": "unstructured", "base": None}
    for _ in range(2):
        run = store.start(assets.DEFAULT_MODEL, config, "builtin:wiki")
        timed = _timed_run(run, assets.DEFAULT_MODEL, "wanda", 8, 128, 4, prune=10.0, evaluation=4.0,
                           dtype=native_dtype())
        store.finish(run, "finished", timed["record"])
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    estimates = [c.value for c in app.caption if c.value.startswith("Estimated time")]
    # the wiki-vs-code preset: 8 points of 1 + 10 + 2 x 4 x 1 s (two domains of 4 windows) and one load: 154 s
    assert estimates[0] == ("Estimated time: about 3 min (8 point(s), at the pace of earlier runs of this model on "
                            "this machine).")


def test_charts_of_one_setting_have_ticks_only_where_there_are_values(three_runs):
    import pandas as pd

    from calib_core.experiments.sweep_figures import spread_chart

    app = _results()
    spec = next(c.proto.spec for c in app.get("plotly_chart") if "Perplexity vs sparsity" in c.proto.spec)
    assert '"tickvals":[0.5]' in spec.replace(" ", "")  # one sparsity: one tick, not 0.45 .. 0.55
    frame = pd.DataFrame([{"method": "wanda", "setting": "50%", "calibration": c, "nsamples": 8, "seed": 0, "ppl": p}
                          for c, p in (("builtin:wiki", 20.0), ("builtin:code", 25.0))])
    assert spread_chart(frame, "wanda").layout.xaxis.type == "category"
