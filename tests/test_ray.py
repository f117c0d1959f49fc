"""Sweeps on a local Ray cluster (CPU, tiny model), and the fallback when Ray is missing."""

import json
import sys

import pytest

from calib_core.cli import main as cli_main
from calib_core.errors import MissingDependencyError
from calib_core.experiments.ray_sweep import ray_available, run_sweep_on_ray
from calib_core.experiments.sweeps import SweepGrid, run_sweep
from calib_core.runs import RunStore
from tests.tiny import save_tiny_folder


def _grid(folder, name="ray"):
    return SweepGrid.from_dict(dict(name=name, model=str(folder), calibration=["builtin:wiki", "builtin:news"],
                                    methods=["wanda", "magnitude"], sparsities=[0.5], nsamples=[2], seqlen=16,
                                    seeds=[0], eval=["builtin:wiki"], eval_windows=2, keep_masks=True))


@pytest.fixture(scope="module")
def local_ray():
    """The first sweep starts a local Ray (--ray auto with no cluster running); stop it afterwards."""
    import ray

    yield ray
    ray.shutdown()


def test_ray_sweep_matches_local_and_resumes(tmp_path, local_ray):
    folder = save_tiny_folder(tmp_path / "tiny")
    store = RunStore(tmp_path / "runs.sqlite")
    summary = run_sweep_on_ray(_grid(folder), store=store)
    assert (summary.ran, summary.skipped, summary.failed) == (3, 0, [])
    runs = store.list()
    assert len(runs) == 3 and all(r["sweep"] == "ray" and r["status"] == "finished" for r in runs)
    assert all(r["record"]["run_id"] == r["id"] for r in runs)
    masks = [r["record"].get("masks") for r in runs]
    assert all(m and m.startswith(str(tmp_path)) for m in masks)  # written by the driver, beside its store
    again = run_sweep_on_ray(_grid(folder), store=store)
    assert (again.ran, again.skipped) == (0, 3)
    # the same points run locally give the same perplexities: Ray changes where, not what
    local = RunStore(tmp_path / "local.sqlite")
    run_sweep(_grid(folder), store=local)
    by_key = {r["point_key"]: r["record"]["perplexity"][0]["ppl"] for r in local.list()}
    for run in runs:
        assert run["record"]["perplexity"][0]["ppl"] == pytest.approx(by_key[run["point_key"]], rel=1e-5)


def test_ray_failure_is_recorded(tmp_path, local_ray):
    folder = save_tiny_folder(tmp_path / "tiny")
    grid = SweepGrid.from_dict(dict(name="bad", model=str(folder), calibration=["set:missing"], methods=["wanda"],
                                    nsamples=[2], seqlen=16, seeds=[0], eval_windows=1))
    store = RunStore(tmp_path / "runs.sqlite")
    summary = run_sweep_on_ray(grid, store=store)
    assert summary.ran == 0 and len(summary.failed) == 1 and "missing" in summary.failed[0]
    assert store.list()[0]["status"] == "failed"


def test_without_ray_the_cli_runs_locally_and_says_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert not ray_available()
    with pytest.raises(MissingDependencyError, match="pip install 'ray"):
        run_sweep_on_ray(_grid(tmp_path), store=RunStore(tmp_path / "runs.sqlite"))
    folder = save_tiny_folder(tmp_path / "tiny")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(dict(name="cli", model=str(folder), calibration=["builtin:wiki"], methods=["wanda"],
                                    nsamples=[2], seqlen=16, seeds=[0], eval_windows=1)))
    assert cli_main(["sweep", str(grid), "--ray", "auto"]) == 0
    captured = capsys.readouterr()
    assert "Ray is not installed" in captured.err and "1 ran" in captured.out
