"""Sweeps: grid expansion, resumable runs in the store, dense weights restored between points."""

import json
import sqlite3

import pytest

from calib_core.cli import main as cli_main
from calib_core.errors import ConfigError
from calib_core.experiments.sweeps import SweepGrid, run_sweep
from calib_core.prune import PruneConfig
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.conftest import PLOTLY_JS_MARKER
from tests.tiny import save_tiny_folder


def _grid(folder, **overrides):
    data = dict(name="t", model=str(folder), calibration=["builtin:wiki", "builtin:news"], methods=["wanda"],
                sparsities=[0.5], nsamples=[2], seqlen=16, seeds=[0, 1], eval=["builtin:wiki"], eval_windows=2)
    data.update(overrides)
    return SweepGrid.from_dict(data)


def test_grid_expands_and_validates():
    grid = SweepGrid.from_dict(dict(name="g", calibration=["builtin:wiki", "builtin:news"],
                                    methods=["wanda", "magnitude", {"method": "owl", "base": "wanda"}],
                                    sparsities=[0.5, "2:4"], seeds=[0, 1, 2]))
    points = grid.points()
    # 2 sources x 2 calibrated methods x 2 settings x 3 seeds, plus magnitude once per setting
    assert len(points) == 2 * 2 * 2 * 3 + 2
    assert len({p.key for p in points}) == len(points)
    assert {p.config.pattern for p in points} == {"unstructured", "2:4"}
    labels = {p.label() for p in points}
    assert "magnitude 0.5 (no calibration data)" in labels and "magnitude 2:4 (no calibration data)" in labels
    assert "wanda 0.5 on builtin:news n=32 seed=2" in labels and not any("None" in label for label in labels)
    with pytest.raises(ConfigError, match="Unknown sweep grid keys"):
        SweepGrid.from_dict(dict(name="g", sparsity=[0.5]))
    with pytest.raises(ConfigError, match="N:M|sparsity|pattern"):
        SweepGrid.from_dict(dict(name="g", sparsities=["4:4"]))
    with pytest.raises(ConfigError, match="non-empty list"):
        SweepGrid.from_dict(dict(name="g", seeds=[]))


def test_sweep_is_resumable_and_restores_dense_weights(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    store = RunStore(tmp_path / "runs.sqlite")
    grid = _grid(folder)
    first = run_sweep(grid, store)
    assert (first.ran, first.skipped, first.failed) == (4, 0, [])
    again = run_sweep(grid, store)
    assert (again.ran, again.skipped) == (0, 4)  # every point finished: nothing reruns
    bigger = run_sweep(_grid(folder, seeds=[0, 1, 2]), store)
    assert (bigger.ran, bigger.skipped) == (2, 4)  # only the new seed's points run
    runs = store.list()
    assert len(runs) == 6 and all(r["sweep"] == "t" and r["status"] == "finished" for r in runs)
    # the last point of the sweep started from restored dense weights: same ppl as a fresh, lone run
    last = runs[-1]
    lone = run_prune(RunSpec(model=str(folder), calib=last["calibration"], nsamples=2, seqlen=16,
                     seed=last["record"]["calibration"]["seed"], config=PruneConfig(device="cpu", method="wanda"),
                     keep_masks=False, evaluation=EvalSpec(sources=["builtin:wiki"], windows=2)),
                         store=RunStore(tmp_path / "other.sqlite"))
    assert last["record"]["perplexity"][0]["ppl"] == pytest.approx(lone["perplexity"][0]["ppl"], rel=1e-6)


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    store = RunStore(tmp_path / "runs.sqlite")
    summary = run_sweep(_grid(folder, calibration=["builtin:wiki", "set:missing"], seeds=[0]), store)
    assert summary.ran == 1 and len(summary.failed) == 1 and "set:missing" in summary.failed[0]
    assert sorted(r["status"] for r in store.list()) == ["failed", "finished"]


def test_old_store_gains_sweep_columns(tmp_path):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:  # the store's first schema, without sweep columns
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, updated TEXT "
                   "NOT NULL, status TEXT NOT NULL, pid INTEGER, model TEXT, method TEXT, sparsity TEXT, "
                   "calibration TEXT, config TEXT, record TEXT, error TEXT)")
        db.execute("INSERT INTO runs (created, updated, status) VALUES ('x', 'x', 'finished')")
    store = RunStore(path)
    assert store.list()[0]["sweep"] is None
    store.start("m", {"method": "wanda"}, None, sweep="s", point_key="k")
    assert store.finished_points("s") == set()


def test_cli_sweep_dry_run_and_run(tmp_path, capsys, monkeypatch):
    folder = save_tiny_folder(tmp_path / "tiny")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(dict(name="cli", model=str(folder), calibration=["builtin:wiki"], methods=["wanda"],
                                    sparsities=[0.5], nsamples=[2], seqlen=16, seeds=[0], eval_windows=2)))
    assert cli_main(["sweep", str(grid), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("todo")
    assert cli_main(["sweep", str(grid), "--figures", str(tmp_path / "figs")]) == 0
    captured = capsys.readouterr()
    assert "1 ran, 0 skipped" in captured.out
    assert "nsamples: No wanda 50% source has runs at two or more sample counts" in captured.err
    for view in ("bars", "spread", "violins"):
        assert PLOTLY_JS_MARKER in (tmp_path / "figs" / f"wanda-{view}.html").read_text()  # works offline
    assert "builtin:wiki" in (tmp_path / "figs" / "summary.csv").read_text()
    assert cli_main(["sweep", str(grid), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("done")
    bad = tmp_path / "grid.txt"
    bad.write_text("name: x")
    assert cli_main(["sweep", str(bad)]) == 2


def test_grids_are_bounded_before_any_point_is_built():
    from calib_core.errors import CalibLabError, InsufficientMemoryError

    base = dict(name="g", calibration=["builtin:wiki"], methods=["wanda"], sparsities=[0.5], nsamples=[8], seeds=[0])
    with pytest.raises(InsufficientMemoryError, match="for their ids alone"):
        SweepGrid.from_dict({**base, "nsamples": [10**9]})
    with pytest.raises(ConfigError, match="has 4000000 points; at most 10000"):
        SweepGrid.from_dict({**base, "calibration": ["builtin:wiki", "builtin:news"], "seeds": list(range(2_000_000))})
    for bad in ({"nsamples": ["8"]}, {"nsamples": [0]}, {"seeds": [-1]}, {"seqlen": 1}, {"eval_windows": 0},
                {"seqlen": True}):
        with pytest.raises(ConfigError):
            SweepGrid.from_dict({**base, **bad})
    for name in ("../../etc/evil", ".hidden", "a/b", "x" * 101):
        with pytest.raises(ConfigError, match="names export folders"):
            SweepGrid.from_dict({**base, "name": name})
    grid = SweepGrid.from_dict(base)
    with pytest.raises(CalibLabError, match="above this server's limit of 4"):
        grid.check_bounds(max_nsamples=4)
