"""Run records: everything needed to trace a result back to its config, code, libraries and data.
The report JSON written by the CLI is exactly this record."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import TypedDict

from ..errors import ConfigError, OutputError, RunNotFoundError
from ..files import atomic_write_json
from ..processes import process_gone, process_start
from ..provenance import environment_versions, peak_memory


class RunRecord(TypedDict, total=False):
    """A run's report: what the run store keeps, `--report` writes and the Results page, the sweep
    tables and the reproduction report read. Stored as JSON; these are its keys."""

    created: str
    model: dict  # spec plus models.describe_model
    versions: dict  # provenance.environment_versions
    perplexity: list[dict]  # PerplexityResult.as_dict per source, with its protocol
    timings: dict[str, float]
    memory: dict  # peak RSS (and CUDA) bytes
    notes: list[str]
    # a pruning run
    config: dict  # PruneConfig.as_dict
    calibration: dict  # CalibrationSet.describe, fingerprint included
    overall_sparsity: float
    allocation: dict | None  # OWL's AllocationEvent
    method_details: dict | None  # which rule or variant ran
    blocks: list[dict]  # BlockRecord with its ModuleRecords
    reconstruction_error_tokens: int
    memory_estimate: dict
    # added by the pipeline
    run_id: int
    job: dict  # the RunSpec without its config (spec.RunSpec.as_record)
    masks: str  # path of the stored masks
    saved: dict  # the saved folder: path, format, sizes, reload check (runs/saved.py)
    push: dict  # the upload: repo, and url or error
    cloze: list[dict]
    zeroshot: dict


def _common(model_spec: str, model_info: dict, perplexities: list, timings: dict, notes: list[str] | None,
            device=None) -> dict:
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": {"spec": model_spec, **model_info},
            "versions": environment_versions(), "perplexity": [p.as_dict() for p in perplexities],
            "timings": timings, "memory": peak_memory(device), "notes": notes or []}


def run_record(model_spec: str, model_info: dict, calibration, result, perplexities: list, timings: dict,
               notes: list[str] | None = None) -> RunRecord:
    """A pruning run's report: config, versions, calibration fingerprint, sparsity, per-block stats, ppl."""
    from ..devices import resolve_device

    return RunRecord(
        **_common(model_spec, model_info, perplexities, timings, notes, resolve_device(result.config.device)),
        config=result.config.as_dict(),
        calibration=calibration.describe() if calibration is not None else None,
        overall_sparsity=result.overall_sparsity,
        allocation=asdict(result.allocation) if result.allocation else None,
        method_details=result.method_details,
        blocks=[asdict(b) for b in result.blocks],
        reconstruction_error_tokens=result.config.recon_tokens,
        memory_estimate=result.memory_estimate,
    )


def eval_record(model_spec: str, model_info: dict, perplexities: list, timings: dict,
                notes: list[str] | None = None, device=None) -> RunRecord:
    """An evaluation's report (`python -m calib_core eval`): the model, versions, perplexities."""
    return RunRecord(**_common(model_spec, model_info, perplexities, timings, notes, device))


def strategy_label(record: dict) -> str | None:
    """How a finished run's windows were chosen: its strategy and changed settings ('random' for runs made
    before strategies existed); None for a run without calibration data."""
    from ..data.strategies import describe_strategy

    if not (record.get("calibration") or record.get("job", {}).get("calib")):
        return None
    job = record.get("job") or {}
    return describe_strategy(job.get("strategy", "random"), job.get("strategy_options"))


def runs_table(runs: list[dict]):
    """One row per stored run, whatever its status: what it was, how it ended, its perplexities."""
    import pandas as pd

    from ..data.sets import list_sets, mark_deleted

    saved = set(list_sets())
    rows = []
    for run in runs:
        record = run["record"] or {}
        calib = record.get("calibration") or {}
        row = {"id": run["id"], "status": run["status"], "origin": origin_of(run), "tags": ", ".join(run.get("tags") or []),
               "created": run["created"], "model": run["model"],
               "method": run["method"], "base": (run["config"] or {}).get("base"), "sparsity": run["sparsity"],
               "calibration": mark_deleted(run["calibration"], saved), "strategy": strategy_label(record),
               "nsamples": calib.get("nsamples"), "seqlen": calib.get("seqlen"),
               "seed": calib.get("seed"), "overall_sparsity": record.get("overall_sparsity"),
               "prune_s": (record.get("timings") or {}).get("prune_total")}
        for p in record.get("perplexity", []):
            row[f"ppl {p['source']}"] = p["ppl"]
        rows.append(row)
    return pd.DataFrame(rows)


def origin_of(run: dict) -> str:
    """Who made a run: the app, the CLI, a library call, or a sweep (by name); '-' for runs recorded before
    the store kept it."""
    if run.get("sweep"):
        return f"sweep {run['sweep']}"
    return run.get("origin") or "-"


def write_json(path: str | os.PathLike, record: dict) -> None:
    atomic_write_json(path, record)


# ---------------------------------------------------------------- the run store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    status TEXT NOT NULL,          -- running | finished | failed | cancelled | interrupted
    pid INTEGER,
    model TEXT,
    method TEXT,
    sparsity TEXT,
    calibration TEXT,
    config TEXT,                   -- JSON
    record TEXT,                   -- JSON report once finished (or partial on failure)
    error TEXT
)
"""
_SIMILARITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS similarity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    model TEXT NOT NULL,
    source TEXT NOT NULL,          -- the scored set, e.g. builtin:wiki or set:NAME
    settings TEXT,                 -- JSON: k, scoring, tokens per item, items
    scores TEXT                    -- JSON: mean of each metric over the set's items
)
"""
# Below this, recording a run (a row, its journal, a record of a few hundred KiB) would fail.
MIN_FREE_BYTES = 1 << 20
# Columns added after the first release of the store: (name, type), added to older files on open.
_ADDED_COLUMNS = [("sweep", "TEXT"), ("point_key", "TEXT"), ("pid_started", "REAL"), ("origin", "TEXT"),
                  ("tags", "TEXT"), ("hidden", "INTEGER NOT NULL DEFAULT 0")]
ORIGINS = ("app", "cli", "library")  # who started a run; a sweep's runs say "sweep"


class RunStore:
    """Run records in SQLite under the user data dir. Every write is one short transaction in SQLite's
    rollback-journal mode, so a killed process leaves the store readable and every committed run is in
    the file itself; a run whose process died is marked 'interrupted' the next time the store is
    opened. Reading never writes: a store on a full disk or a read-only file still opens and lists
    (an older store in WAL mode, which needs its -shm file to be written even to read, is read as its
    file holds it), and starting a run there fails with an OutputError."""

    def __init__(self, path: str | os.PathLike | None = None):
        from ..paths import data_dir

        self.path = Path(path) if path else data_dir() / "runs.sqlite"
        self.read_only_reason: str | None = None
        try:
            self._prepare()
        except sqlite3.OperationalError as exc:
            if not self.path.exists():
                raise OutputError(f"Cannot create the run store '{self.path}': {exc}.") from exc
            self.read_only_reason = str(exc)
        try:
            self.mark_interrupted()
        except OutputError as exc:  # listed as interrupted all the same (_select)
            self.read_only_reason = self.read_only_reason or str(exc.__cause__)
        free = shutil.disk_usage(self.path.parent).free
        if self.read_only_reason is None and free < MIN_FREE_BYTES:  # said now, not when a run ends
            self.read_only_reason = f"the disk holding it is full ({free // 1024} KiB free)"

    def _connection(self, immutable: bool = False) -> sqlite3.Connection:
        if immutable:  # no locks, no journal, no -shm: reads the file as it is
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
        return sqlite3.connect(self.path, timeout=30)

    def _prepare(self) -> None:
        """Create the tables, add the columns of later releases and leave WAL mode, writing only what is
        missing: an up-to-date store opens without a write."""
        with closing(self._connection()) as db, db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                db.execute("PRAGMA journal_mode=DELETE")  # reading a WAL store writes its -shm file
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" not in tables:
                db.execute(_SCHEMA)
            if "similarity" not in tables:
                db.execute(_SIMILARITY_SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def _read(self, sql: str, params: tuple = (), rows_as_dicts: bool = False) -> list:
        """Rows of a query. Where the normal read fails (a WAL store whose -shm cannot be written on a
        full disk or a read-only folder), the file is read as it is, and `read_only_reason` says why."""
        try:
            return self._query(self._connection(), sql, params, rows_as_dicts)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or not self.path.exists():
                raise
            self.read_only_reason = self.read_only_reason or str(exc)
            return self._query(self._connection(immutable=True), sql, params, rows_as_dicts)

    @staticmethod
    def _query(connection: sqlite3.Connection, sql: str, params: tuple, rows_as_dicts: bool) -> list:
        with closing(connection) as db:
            if rows_as_dicts:
                db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple = (), many: bool = False) -> sqlite3.Cursor:
        try:
            with closing(self._connection()) as db, db:
                return db.executemany(sql, params) if many else db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise OutputError(f"Cannot write the run store '{self.path}': {exc}. Free disk space (or fix the "
                              f"file's permissions) and retry.") from exc

    def start(self, model: str, config: dict, calibration: str | None, sweep: str | None = None,
              point_key: str | None = None, origin: str = "library") -> int:
        if origin not in ORIGINS:
            raise ValueError(f"Unknown run origin '{origin}' (one of {', '.join(ORIGINS)}).")
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        sparsity = config.get("pattern") if ":" in str(config.get("pattern")) else str(config.get("sparsity"))
        cursor = self._write(
            "INSERT INTO runs (created, updated, status, pid, pid_started, model, method, sparsity, calibration, "
            "config, sweep, point_key, origin) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, now, os.getpid(), process_start(), model, config.get("method"), sparsity, calibration,
             json.dumps(config), sweep, point_key, origin),
        )
        return int(cursor.lastrowid)

    def set_tags(self, run_id: int, tags: list[str]) -> None:
        """A run's tags (free words the user groups runs by), replacing its earlier ones."""
        self.get(run_id)
        cleaned = sorted({t.strip() for t in tags if t.strip()})
        self._write("UPDATE runs SET tags = ? WHERE id = ?", (json.dumps(cleaned) if cleaned else None, run_id))

    def set_hidden(self, run_ids: list[int], hidden: bool) -> None:
        """Hide runs from the Results page's views (kept in the store, listed when asked for)."""
        for run_id in run_ids:
            self.get(run_id)
        self._write("UPDATE runs SET hidden = ? WHERE id = ?", [(int(hidden), r) for r in run_ids], many=True)

    def delete(self, run_ids: list[int]) -> None:
        """Remove runs from the store with their masks and channel statistics (a saved model folder stays:
        it is the user's). A running run cannot be deleted: cancel it first."""
        runs = [self.get(r) for r in run_ids]
        running = [r["id"] for r in runs if r["status"] == "running"]
        if running:
            raise ConfigError(f"Run {running[0]} is still running: cancel it before deleting it.")
        self._write("DELETE FROM runs WHERE id = ?", [(r,) for r in run_ids], many=True)
        for run_id in run_ids:
            self.discard_files(run_id)

    def finish(self, run_id: int, status: str, record: dict | None = None, error: str | None = None) -> None:
        if status not in ("finished", "failed", "cancelled"):
            raise ValueError(f"Unknown final status '{status}'.")
        self._write("UPDATE runs SET status = ?, updated = ?, record = ?, error = ? WHERE id = ?",
                    (status, time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(record) if record else None, error,
                     run_id))

    def mask_path(self, run_id: int) -> Path:
        """Where a run's masks are kept (metrics/agreement.py reads them for mask agreement)."""
        return self.path.parent / "masks" / f"run-{run_id}.npz"

    def channel_path(self, run_id: int) -> Path:
        """Where a run's per-channel input statistics are kept (metrics/inside.py reads them)."""
        return self.path.parent / "channels" / f"run-{run_id}.npz"

    def discard_files(self, run_id: int) -> None:
        """Remove what a run that did not finish wrote beside the store (its record names none of it)."""
        for path in (self.mask_path(run_id), self.channel_path(run_id)):
            path.unlink(missing_ok=True)

    def finished_points(self, sweep: str) -> set[str]:
        """Keys of the sweep's points that already finished: a resumed sweep skips them."""
        rows = self._read("SELECT point_key FROM runs WHERE sweep = ? AND status = 'finished'", (sweep,))
        return {key for (key,) in rows}

    def mark_interrupted(self) -> int:
        """Runs still 'running' whose process is gone were killed: say so."""
        rows = self._read("SELECT id, pid, pid_started FROM runs WHERE status = 'running'")
        dead = [run_id for run_id, pid, started in rows if process_gone(pid, started)]
        if dead:  # opening a store with no dead run writes nothing
            self._write("UPDATE runs SET status = 'interrupted' WHERE id = ?", [(r,) for r in dead], many=True)
        return len(dead)

    def get(self, run_id: int) -> dict:
        runs = self._select("id = ?", (run_id,))
        if not runs:
            raise RunNotFoundError(f"No run {run_id} in the run store {self.path}.")
        return runs[0]

    def list(self) -> list[dict]:
        """Every run, oldest first."""
        return self._select()

    def run_costs(self, model: str) -> list[dict]:
        """The finished runs of `model` with only what their time was spent on (the record's job, config
        and timings; SQLite extracts them, so a large store is not parsed whole): runs.estimate's input."""
        rows = self._read("SELECT id, json_extract(record, '$.job'), json_extract(record, '$.config'), "
                          "json_extract(record, '$.timings') FROM runs WHERE model = ? AND status = 'finished' "
                          "ORDER BY id", (model,))
        return [{"id": run_id, "status": "finished", "record": {
            "job": json.loads(job or "{}"), "config": json.loads(config or "{}"), "timings": json.loads(timings or "{}")}}
            for run_id, job, config, timings in rows]

    def sweep_runs(self, sweep: str, status: str | None = None) -> list[dict]:
        """The runs of one sweep (or reproduction), optionally only those with `status`."""
        if status is None:
            return self._select("sweep = ?", (sweep,))
        return self._select("sweep = ? AND status = ?", (sweep, status))

    def sweep_names(self) -> list[str]:
        return sorted(name for (name,) in self._read("SELECT DISTINCT sweep FROM runs WHERE sweep IS NOT NULL"))

    def record_similarity(self, model: str, table) -> None:
        """Keep each set's mean scores of a similarity table (metrics.similarity), so runs pruned on
        those sets can be set against how training-like their data is."""
        metrics = [c for c in table.columns if c not in ("set", "sample", "tokens", "text")]
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        rows = []
        for source, group in table.groupby("set", sort=False):
            settings = {"k": table.attrs.get("k"), "tokens": table.attrs.get("max_tokens"), "items": len(group),
                        "scoring": (table.attrs.get("scoring") or {}).get(source)}
            rows.append((now, model, source, json.dumps(settings), json.dumps(group[metrics].mean().to_dict())))
        self._write("INSERT INTO similarity (created, model, source, settings, scores) VALUES (?, ?, ?, ?, ?)", rows,
                    many=True)

    def similarity_scores(self, model: str) -> dict[str, dict]:
        """The latest recorded scores of each source for `model`: source -> {metric: mean, "settings": ...}."""
        rows = self._read("SELECT source, settings, scores FROM similarity WHERE model = ? ORDER BY id", (model,))
        return {source: {**json.loads(scores), "settings": json.loads(settings)} for source, settings, scores in rows}

    def _select(self, where: str = "1 = 1", params: tuple = ()) -> list[dict]:
        rows = self._read(f"SELECT * FROM runs WHERE {where} ORDER BY id", params, rows_as_dicts=True)
        out = []
        for row in rows:
            item = dict(row)
            for key in ("config", "record", "tags"):
                item[key] = json.loads(item[key]) if item.get(key) else None
            item["tags"] = item["tags"] or []
            item["hidden"] = bool(item.get("hidden"))
            if item["status"] == "running" and process_gone(item["pid"], item.get("pid_started")):
                item["status"] = "interrupted"  # a store that cannot be written shows it all the same
            out.append(item)
        return out
