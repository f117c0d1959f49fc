"""A shared app confines visitors to one workspace folder and capped sizes; a local one does not."""

import os
from dataclasses import replace

import pytest

from calib_core.access import SHARED_LIMITS, AccessPolicy, is_loopback
from calib_core.errors import AccessError
from calib_core.experiments.sweeps import SweepGrid
from calib_core.runs.spec import EvalSpec, RunSpec


@pytest.fixture
def shared(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_LAB_WORKSPACE", str(tmp_path / "ws"))
    return AccessPolicy.for_server("0.0.0.0", environ={})


def test_only_loopback_addresses_keep_full_access(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_LAB_WORKSPACE", str(tmp_path / "ws"))
    for address in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(address) and not AccessPolicy.for_server(address, environ={}).shared
    for address in ("", None, "0.0.0.0", "::", "192.168.1.5", "my-host.example"):
        assert not is_loopback(address) and AccessPolicy.for_server(address, environ={}).shared
    forced = AccessPolicy.for_server("127.0.0.1", environ={"CALIB_LAB_SHARED": "1"})
    assert forced.shared and forced.workspace == (tmp_path / "ws").resolve() and forced.limits == SHARED_LIMITS


def test_paths_must_stay_inside_the_workspace(shared, tmp_path):
    ws = shared.workspace
    (ws / "data").mkdir()
    (ws / "data" / "a.txt").write_text("x")
    assert shared.source("file:data/a.txt") == f"file:{ws / 'data' / 'a.txt'}"
    assert shared.source(f"file:{ws}/data/a.txt") == f"file:{ws / 'data' / 'a.txt'}"
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", ws / "link.txt")
    for escape in ("file:/etc/passwd", "file:../secret.txt", "file:data/../../secret.txt", "file:link.txt",
                   "tokens:/etc/hosts", "file:~/x.txt"):
        with pytest.raises(AccessError, match="inside the workspace folder"):
            shared.source(escape)
    assert shared.source("builtin:wiki") == "builtin:wiki" and shared.source("set:x") == "set:x"
    with pytest.raises(AccessError):
        shared.save_folder("/tmp/anywhere")
    assert shared.save_folder("out/model") == str(ws / "out" / "model")


def test_models_remote_code_and_folders(shared):
    assert shared.model("smollm2-135m") == "smollm2-135m"
    assert shared.model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert shared.model("gpt2") == "gpt2"
    with pytest.raises(AccessError, match="trust_remote_code"):
        shared.model("org/model", trust_remote_code=True)
    for folder in ("/etc", "../x", "~/models/m"):
        with pytest.raises(AccessError):
            shared.model(folder)
    assert shared.model("models/a/b") == str(shared.workspace / "models" / "a" / "b")  # relative: in the workspace
    assert AccessPolicy().model("/anything", trust_remote_code=True) == "/anything"


def test_jobs_and_grids_are_capped(shared):
    job = RunSpec(calib="file:data.txt", nsamples=8, seqlen=128, save="out", evaluation=EvalSpec(windows=4))
    checked = shared.spec(job)
    assert checked.calib == f"file:{shared.workspace / 'data.txt'}" and checked.save == str(shared.workspace / "out")
    for bad in (dict(nsamples=100_000), dict(seqlen=100_000), dict(evaluation=EvalSpec(windows=10**6)),
                dict(evaluation=EvalSpec(windows=None)), dict(evaluation=EvalSpec(seqlen=100_000, windows=4)),
                dict(calib="file:/etc/passwd"), dict(evaluation=EvalSpec(["file:/etc/passwd"], windows=4)),
                dict(trust_remote_code=True)):
        with pytest.raises(AccessError):
            shared.spec(replace(job, **bad))
    local = AccessPolicy()
    assert local.spec(RunSpec(nsamples=100_000, evaluation=EvalSpec(windows=None))).nsamples == 100_000
    grid = SweepGrid.from_dict(dict(name="g", nsamples=[8], seeds=list(range(400)), calibration=["builtin:wiki", "set:a"]))
    with pytest.raises(Exception, match="at most 500"):
        shared.grid(grid)
    grid = SweepGrid.from_dict(dict(name="g", nsamples=[8], calibration=["file:/etc/passwd"]))
    with pytest.raises(AccessError):
        shared.grid(grid)
    with pytest.raises(AccessError, match="new tokens per text"):
        shared.generation(16, 100_000)
