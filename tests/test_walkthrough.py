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


def _results(**params) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page("app_pages/results.py")
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, app.exception
    return app


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
    app = AppTest.from_file(APP, default_timeout=60)
    if tmp_path is not None:
        app.session_state["model_spec"] = str(save_tiny_folder(tmp_path / "tiny"))
    app.run()
    app.switch_page("app_pages/prune.py")
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, app.exception
    return app


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
