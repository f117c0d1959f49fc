"""The SQLite run store survives kills and marks interrupted runs."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from calib_core.errors import RunNotFoundError
from calib_core.runs import RunStore


def test_runs_round_trip(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.start("smollm2-135m", {"method": "wanda", "sparsity": 0.5, "pattern": "unstructured"}, "builtin:wiki")
    assert store.get(run_id)["status"] == "running"
    store.finish(run_id, "finished", {"perplexity": [{"ppl": 12.5}]})
    run = store.get(run_id)
    assert run["status"] == "finished" and run["record"]["perplexity"][0]["ppl"] == 12.5
    assert run["config"]["method"] == "wanda" and run["sparsity"] == "0.5"
    with pytest.raises(ValueError):
        store.finish(run_id, "exploded")
    with pytest.raises(RunNotFoundError, match="No run 999"):
        store.get(999)


def test_killed_process_leaves_store_readable_and_run_interrupted(tmp_path):
    path = tmp_path / "runs.sqlite"
    script = textwrap.dedent(f"""
        import os, signal
        from calib_core.runs import RunStore
        store = RunStore({str(path)!r})
        store.start("m", {{"method": "sparsegpt", "pattern": "2:4"}}, None)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    store = RunStore(path)  # opening the store notices the dead process
    runs = store.list()
    assert len(runs) == 1 and runs[0]["status"] == "interrupted" and runs[0]["sparsity"] == "2:4"


def test_two_stores_write_concurrently(tmp_path):
    a, b = RunStore(tmp_path / "runs.sqlite"), RunStore(tmp_path / "runs.sqlite")
    ids = [a.start("m", {"method": "wanda"}, None), b.start("m", {"method": "owl"}, None)]
    a.finish(ids[1], "failed", error="boom")
    b.finish(ids[0], "finished", {"x": 1})
    statuses = {r["id"]: r["status"] for r in RunStore(tmp_path / "runs.sqlite").list()}
    assert statuses == {ids[0]: "finished", ids[1]: "failed"}
    assert json.loads(json.dumps(a.get(ids[1])))["error"] == "boom"


def test_a_reused_pid_does_not_keep_a_dead_run_running(tmp_path):
    """The store keeps the process start time with the pid: a live process that took a dead run's pid
    (here: this test process, with another start time) does not keep that run 'running'."""
    import sqlite3

    import psutil

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    reused = store.start("m", {"method": "wanda"}, None)
    own = store.start("m", {"method": "wanda"}, None)
    assert store.get(own)["pid_started"] == pytest.approx(psutil.Process().create_time())
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET pid_started = pid_started - 3600 WHERE id = ?", (reused,))
    reopened = RunStore(path)
    assert reopened.get(reused)["status"] == "interrupted"
    assert reopened.get(own)["status"] == "running"


def test_the_store_lists_on_a_full_disk_and_refuses_new_runs_clearly(small_tmpfs):
    import sqlite3

    from calib_core.errors import OutputError
    from tests.conftest import fill_disk

    path = small_tmpfs / "runs.sqlite"
    store = RunStore(path)
    finished = store.start("m", {"method": "wanda"}, None)
    store.finish(finished, "finished", {"perplexity": []})
    for _ in range(3):
        store.start("m", {"method": "sparsegpt"}, None)
    with sqlite3.connect(path) as db:  # their process died
        db.execute("UPDATE runs SET pid = 4194303 WHERE status = 'running'")
    fill_disk(small_tmpfs)
    full = RunStore(path)  # opening would mark the dead runs: it cannot write, and must still open
    assert full.read_only_reason and "full" in full.read_only_reason
    assert [r["status"] for r in full.list()] == ["finished", "interrupted", "interrupted", "interrupted"]
    with pytest.raises(OutputError, match="Cannot write the run store"):
        full.start("m", {"method": "wanda"}, None)


def _wal_store_closed_cleanly(path) -> None:
    """A store as the previous release left it: WAL mode, every connection closed (no -shm, no -wal)."""
    import gc
    import sqlite3
    from contextlib import closing

    store = RunStore(path)
    done = store.start("m", {"method": "wanda", "sparsity": 0.5}, "builtin:wiki")
    store.finish(done, "finished", {"perplexity": [{"ppl": 21.5}]})
    del store
    gc.collect()  # connections the store did not close itself
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"


def test_a_full_disk_store_lists_without_writing(small_tmpfs):
    """Found by a reliability probe: a store whose connections were all closed, on a full disk, failed
    every read with 'disk I/O error' (WAL mode has to write its -shm file to read). Opening and listing
    must not need to write; the store says it is read-only and why."""
    import os
    import subprocess
    import sys

    from tests.conftest import fill_disk

    path = small_tmpfs / "runs.sqlite"
    _wal_store_closed_cleanly(path)
    assert sorted(os.listdir(small_tmpfs)) == ["runs.sqlite"]
    fill_disk(small_tmpfs)
    full = RunStore(path)
    assert [(r["status"], r["record"]["perplexity"][0]["ppl"]) for r in full.list()] == [("finished", 21.5)]
    assert full.read_only_reason
    cli = subprocess.run([sys.executable, "-m", "calib_core", "runs"], capture_output=True, text=True,
                         env=dict(os.environ, CALIB_LAB_DATA=str(small_tmpfs)))
    assert cli.returncode == 0, cli.stderr
    assert "finished" in cli.stdout and "21.50" in cli.stdout
    assert "read-only" in cli.stderr


def test_opening_an_old_wal_store_leaves_wal_mode_and_a_current_store_opens_without_writing(tmp_path):
    import sqlite3
    from contextlib import closing

    path = tmp_path / "runs.sqlite"
    _wal_store_closed_cleanly(path)
    RunStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    path.chmod(0o444)  # root ignores file modes: the open must not even try to write
    before = path.stat().st_mtime_ns, path.read_bytes()
    assert [r["status"] for r in RunStore(path).list()] == ["finished"]
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_runs_keep_their_origin_tags_and_hidden_flag_and_delete_with_their_files(tmp_path):
    from calib_core.errors import ConfigError
    from calib_core.runs.store import runs_table

    store = RunStore(tmp_path / "runs.sqlite")
    config = {"method": "wanda", "sparsity": 0.5, "pattern": "unstructured"}
    app_run = store.start("m", config, "builtin:wiki", origin="app")
    cli_run = store.start("m", config, "builtin:wiki", origin="cli")
    sweep_run = store.start("m", config, "builtin:wiki", sweep="grid", point_key="k")
    with pytest.raises(ValueError, match="Unknown run origin"):
        store.start("m", config, None, origin="browser")
    for run in (app_run, cli_run, sweep_run):
        store.finish(run, "finished", {"perplexity": []})
    assert runs_table(store.list())["origin"].tolist() == ["app", "cli", "sweep grid"]
    store.set_tags(app_run, [" wiki", "baseline ", "", "wiki"])
    assert store.get(app_run)["tags"] == ["baseline", "wiki"] and store.get(cli_run)["tags"] == []
    store.set_hidden([cli_run], True)
    assert [r["hidden"] for r in store.list()] == [False, True, False]
    store.mask_path(cli_run).parent.mkdir(parents=True)
    store.mask_path(cli_run).write_bytes(b"masks")
    store.delete([cli_run])
    assert [r["id"] for r in store.list()] == [app_run, sweep_run] and not store.mask_path(cli_run).exists()
    running = store.start("m", config, None)
    with pytest.raises(ConfigError, match="still running"):
        store.delete([running])
    with pytest.raises(RunNotFoundError):
        store.delete([cli_run])


def test_an_older_store_gains_the_new_columns_and_its_runs_say_their_origin_is_unknown(tmp_path):
    import sqlite3

    from calib_core.runs.store import _SCHEMA, runs_table

    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(_SCHEMA)
        db.execute("INSERT INTO runs (created, updated, status, model, method, sparsity, calibration, config) VALUES "
                   "('2026', '2026', 'finished', 'm', 'wanda', '0.5', 'builtin:wiki', '{}')")
    store = RunStore(path)
    (run,) = store.list()
    assert (run["tags"], run["hidden"]) == ([], False) and runs_table([run])["origin"].tolist() == ["-"]
