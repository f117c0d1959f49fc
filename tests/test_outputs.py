"""Output destinations are checked before any work, saves appear whole or not at all, and what
killed writers leave behind is cleaned up."""

import errno
import json
import os
import stat

import pytest

from calib_core import files
from calib_core.cli import main as cli_main
from calib_core.data import sets
from calib_core.errors import OutputError
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.tiny import save_tiny_folder

MISSING_MODEL = "/nonexistent/model-folder"  # loading it would fail: an output error must come first


@pytest.fixture
def tiny_folder(tmp_path):
    return save_tiny_folder(tmp_path / "tiny")


def tiny_prune(folder, *extra):
    return ["prune", "--model", str(folder), "--nsamples", "2", "--seqlen", "16", "--eval-windows", "1", *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    return line


def test_save_onto_a_file_fails_before_the_model_loads(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert cli_main(tiny_prune(MISSING_MODEL, "--save", str(target))) == 2
    assert "exists and is not a folder" in error_line(capsys)
    assert RunStore().list() == []  # nothing started


def test_report_onto_a_folder_or_under_a_file_fails_before_the_model_loads(tmp_path, capsys):
    assert cli_main(tiny_prune(MISSING_MODEL, "--report", str(tmp_path))) == 2
    assert "is a folder" in error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(tiny_prune(MISSING_MODEL, "--report", str(blocker / "sub" / "r.json"))) == 2
    assert "is a file, not a folder" in error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder; the tmpfs test covers root")
def test_unwritable_save_folder_fails_before_the_model_loads(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert cli_main(tiny_prune(MISSING_MODEL, "--save", str(locked / "out"))) == 2
        assert "no write permission" in error_line(capsys)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_non_empty_save_folder_needs_overwrite_and_is_then_replaced(tmp_path, tiny_folder, capsys):
    target = tmp_path / "out"
    target.mkdir()
    (target / "model-00002-of-00002.safetensors").write_text("a stale shard")
    assert cli_main(tiny_prune(MISSING_MODEL, "--save", str(target))) == 2
    line = error_line(capsys)
    assert "is not empty" in line and "--overwrite" in line
    assert (target / "model-00002-of-00002.safetensors").exists()  # untouched
    assert cli_main(tiny_prune(tiny_folder, "--save", str(target), "--overwrite")) == 0
    saved = sorted(p.name for p in target.iterdir())
    assert "model-00002-of-00002.safetensors" not in saved  # replaced, not merged
    assert {"config.json", "model.safetensors", "calib_lab_report.json"} <= set(saved)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(files.TMP_PREFIX)]


def test_report_is_written_before_the_run_counts_as_finished(tmp_path, tiny_folder):
    report = tmp_path / "reports" / "r.json"
    store = RunStore(tmp_path / "runs.sqlite")
    record = run_prune(RunSpec(model=str(tiny_folder), nsamples=2, seqlen=16, report=str(report),
                       save=str(tmp_path / "saved"), keep_masks=False, evaluation=EvalSpec(windows=1)), store=store)
    assert json.loads(report.read_text())["run_id"] == record["run_id"]
    saved = json.loads((tmp_path / "saved" / "calib_lab_report.json").read_text())
    assert saved["run_id"] == record["run_id"] and store.get(record["run_id"])["status"] == "finished"


def test_a_full_disk_during_the_save_leaves_nothing_and_fails_the_run(tmp_path, tiny_folder, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", disk_full)
    store = RunStore(tmp_path / "runs.sqlite")
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="the disk is full"):
        run_prune(RunSpec(model=str(tiny_folder), nsamples=2, seqlen=16, save=str(target), keep_masks=False,
                  evaluation=EvalSpec(windows=1)), store=store)
    # no partial folder, no journal left; nor the run's channel statistics (written before the save failed)
    assert sorted(set(os.listdir(tmp_path)) - {"channels"}) == ["runs.sqlite", "tiny"]
    (run,) = store.list()
    assert not any((tmp_path / "channels").iterdir()) and not store.channel_path(run["id"]).exists()
    assert run["status"] == "failed" and "disk is full" in run["error"]


def test_overwrite_keeps_the_old_folder_when_the_new_save_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous model")
    with pytest.raises(RuntimeError):
        with files.atomic_folder(target, overwrite=True) as folder:
            (folder / "new.txt").write_text("half")
            raise RuntimeError("killed halfway")
    assert sorted(os.listdir(target)) == ["old.txt"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_files_get_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = sets.save_set("perm", [{"text": "a text"}])
        exported = sets.export_set("perm", tmp_path / "perm.jsonl")
        with files.atomic_folder(tmp_path / "folder") as folder:
            (folder / "x").write_text("x")
    finally:
        os.umask(old)
    for written in (path, exported, exported.with_suffix(".meta.json"), tmp_path / "folder" / "x"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"{files.TMP_PREFIX}4194303-1-model-abc"  # above pid_max on Linux: never running
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"0" * 1024)
    unparsable = tmp_path / f"{files.TMP_PREFIX}junk"
    unparsable.write_text("x")
    with files.atomic_file(tmp_path / "live.json") as live:  # this process's own temporary
        live.write_text("{}")
        removed = files.clean_stale_temporaries(tmp_path)
        assert live.exists()
    assert sorted(removed) == sorted([dead, unparsable]) and not dead.exists()


def test_interrupted_conversion_leftovers_are_removed_at_start(tmp_path, monkeypatch):
    from calib_core.housekeeping import clean_stale_files

    monkeypatch.setenv("CALIB_LAB_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    legacy = models / ".smollm2-135m-k2j3h4"  # what a killed conversion left before this fix
    legacy.mkdir()
    (legacy / "model.safetensors").write_bytes(b"0" * 1024)
    ours = models / f"{files.TMP_PREFIX}4194303-1-smollm2-135m-v1-x"
    ours.mkdir()
    clean_stale_files()
    assert not legacy.exists() and not ours.exists()
