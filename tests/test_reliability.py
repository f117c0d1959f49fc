"""Safe to leave running: killed runs, full disks, huge inputs and the app's bind address.

Each test states what it tried; the kill test reports how many kills landed in each phase."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calib_core import files
from calib_core.errors import OutputError
from calib_core.runs import RunStore, pipeline
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.conftest import fill_disk
from tests.tiny import save_tiny_folder

ROOT = Path(__file__).resolve().parent.parent
# A child's own peak RSS (provenance.peak_rss: not ru_maxrss, which Linux carries over from the pytest parent).
PEAK_RSS_MB = ("from calib_core.provenance import peak_rss\n"
               "def peak_rss_mb():\n"
               "    return peak_rss() / 2**20\n")
SAVED_FILES = {"config.json", "model.safetensors", "calib_lab_report.json", "tokenizer.json"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "calib_core", *args]


def _env(data: Path) -> dict:
    return dict(os.environ, CALIB_LAB_DATA=str(data), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.fixture
def wide_tiny(tmp_path):
    """A tiny model wide enough (a few MB) that saving it takes long enough to be killed during the save."""
    from tests.tiny import char_tokenizer, tiny_model

    folder = tmp_path / "wide-tiny"
    tiny_model("llama", hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=4,
               head_dim=64, num_hidden_layers=3).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def _prune_args(model: Path, out: Path, report: Path) -> list[str]:
    return _cli("prune", "--model", str(model), "--nsamples", "2", "--seqlen", "32", "--eval-windows", "1",
                "--save", str(out), "--report", str(report), "--overwrite")


def _temporaries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(files.TMP_PREFIX)}


def _check_disk(out: Path, report: Path) -> None:
    """A save folder is absent or complete; a report is absent or whole JSON."""
    if out.exists():
        assert SAVED_FILES <= {p.name for p in out.iterdir()}, sorted(p.name for p in out.iterdir())
        json.loads((out / "calib_lab_report.json").read_text())
    if report.exists():
        json.loads(report.read_text())


def test_sigkill_at_random_moments_never_leaves_a_partial_save_or_a_running_run(tmp_path, wide_tiny):
    data, parent = tmp_path / "data", tmp_path / "saves"
    parent.mkdir()
    out, report = parent / "model", tmp_path / "report.json"
    started = time.perf_counter()
    whole = subprocess.run(_prune_args(wide_tiny, out, report), env=_env(data), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    duration = time.perf_counter() - started
    _check_disk(out, report)
    rng = random.Random(0)
    phases = {"during the save": 0, "at a random moment": 0, "finished first": 0}
    for attempt in range(10):
        stale = _temporaries(parent)  # a killed save's temporary stays until the next save: not this run's
        proc = subprocess.Popen(_prune_args(wide_tiny, out, report), env=_env(data), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if attempt % 2 == 0:  # wait for this save's temporary to appear, then kill
            deadline = time.time() + 10 * duration
            while proc.poll() is None and time.time() < deadline:
                if _temporaries(parent) - stale:
                    break
                time.sleep(0.002)
            phase = "during the save"
        else:
            try:
                proc.wait(timeout=rng.uniform(0.2, duration))
            except subprocess.TimeoutExpired:
                pass
            phase = "at a random moment"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            phases[phase] += 1
        else:
            phases["finished first"] += 1
        _check_disk(out, report)
        statuses = [r["status"] for r in RunStore(data / "runs.sqlite").list()]
        assert "running" not in statuses, statuses
    print(f"kills: {phases}")
    assert phases["during the save"] >= 2 and phases["at a random moment"] >= 2, phases
    runs = RunStore(data / "runs.sqlite").list()
    interrupted = sum(r["status"] == "interrupted" for r in runs)
    assert {r["status"] for r in runs} <= {"finished", "interrupted"}
    # a kill while Python still imports comes before the run is recorded; one during the save never does
    assert phases["during the save"] <= interrupted <= phases["during the save"] + phases["at a random moment"]
    # the next save into the same folder removes the killed runs' temporaries and completes
    final = subprocess.run(_prune_args(wide_tiny, out, report), env=_env(data), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    _check_disk(out, report)
    assert sorted(p.name for p in parent.iterdir()) == ["model"]
    assert json.loads(report.read_text())["run_id"] == RunStore(data / "runs.sqlite").list()[-1]["id"]


def test_full_disk_fails_before_the_run_or_leaves_nothing(small_tmpfs, tmp_path, monkeypatch):
    folder = save_tiny_folder(tmp_path / "tiny")
    fill_disk(small_tmpfs)
    data = tmp_path / "data"
    cli = subprocess.run(_cli("prune", "--model", str(folder), "--nsamples", "2", "--seqlen", "16", "--eval-windows",
                              "1", "--save", str(small_tmpfs / "out")), env=_env(data), capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "Not enough disk space" in cli.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
    # a disk that fills up while saving (the free-space check passed, another writer took the space)
    (small_tmpfs / "filler").unlink()
    fill_disk(small_tmpfs)
    os.truncate(small_tmpfs / "filler", os.path.getsize(small_tmpfs / "filler") - 64 * 1024)
    monkeypatch.setattr(pipeline, "check_free_space", lambda path, needed: None)
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(OutputError, match="the disk is full"):
        run_prune(RunSpec(model=str(folder), nsamples=2, seqlen=16, save=str(small_tmpfs / "out"), keep_masks=False,
                          evaluation=EvalSpec(windows=1)), store=store)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
    assert store.list()[-1]["status"] == "failed"


def test_impossible_sizes_are_refused_before_any_text_is_read(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    args = ["prune", "--model", str(folder), "--calib", f"file:{big}", "--mode", "concat", "--nsamples", "100000",
            "--seqlen", "100000"]
    script = ("import sys\n"
              "from calib_core.cli import main\n"
              f"code = main({args!r})\n"
              f"{PEAK_RSS_MB}"
              "print('peak_mb', peak_rss_mb())\n"
              "sys.exit(code)\n")
    cli = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path / "data"), capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "memory" in cli.stderr.lower()
    peak_mb = float(cli.stdout.split("peak_mb")[-1])
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB: something was allocated before the refusal"


@pytest.mark.bundled
def test_a_200_mb_one_line_file_is_sampled_within_a_gigabyte(tmp_path):
    big = tmp_path / "one-line.txt"
    words = [f"w{i:x}" for i in range(5000)]
    rng = random.Random(0)
    line = " ".join(rng.choice(words) for _ in range(200_000)) + " "
    with open(big, "w") as handle:
        while handle.tell() < 200 * 1024**2:
            handle.write(line)
    script = ("import json, sys\n" + PEAK_RSS_MB +
              "from transformers import AutoTokenizer\n"
              "from calib_core import assets\n"
              "from calib_core.data.sources import build_calibration\n"
              "tok = AutoTokenizer.from_pretrained(str(assets.bundled_model_dir()))\n"
              "base = peak_rss_mb()\n"
              f"c = build_calibration('file:{big}', tok, 128, 2048, 0, 'document')\n"
              "peak = peak_rss_mb()\n"
              "print(json.dumps({'added_mb': peak - base, 'scan': c.read_scan, 'shape': list(c.input_ids.shape)}))\n")
    done = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path / "data"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"200 MB one-line file: {measured}")
    assert measured["shape"] == [128, 2048] and measured["scan"]["stopped"] == "read budget"
    assert measured["added_mb"] < 1024  # the old reader needed ~12 GB


def test_the_app_listens_on_loopback_only(tmp_path):
    import psutil

    from tests.app_server import app_server

    with app_server(_env(tmp_path / "data")) as (proc, _url):
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip in ("127.0.0.1", "::1") for a in listening), listening
