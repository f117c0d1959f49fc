"""Run records: everything needed to trace a result back to its config, code, libraries and data.
The report JSON written by the CLI is exactly this record."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .files import atomic_write_json


def environment_versions() -> dict:
    import transformers

    versions = {
        "calib_core": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    return versions


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory() -> dict:
    import resource

    peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return peak


def run_record(model_spec: str, model_info: dict, calibration, result, perplexities: list, timings: dict,
               notes: list[str] | None = None) -> dict:
    """The report: config, versions, calibration fingerprint, sparsity, per-block stats, ppl."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"spec": model_spec, **model_info},
        "config": result.config.as_dict() if result else None,
        "versions": environment_versions(),
        "calibration": calibration.describe() if calibration is not None else None,
        "overall_sparsity": result.overall_sparsity if result else None,
        "allocation": asdict(result.allocation) if result and result.allocation else None,
        "method_details": result.method_details if result else None,
        "blocks": [asdict(b) for b in result.blocks] if result else [],
        "reconstruction_error_tokens": result.config.recon_tokens if result else None,
        "memory_estimate": result.memory_estimate if result else None,
        "perplexity": [p.as_dict() for p in perplexities],
        "timings": timings,
        "memory": peak_memory(),
        "notes": notes or [],
    }


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
# Columns added after the first release of the store: (name, type), added to older files on open.
_ADDED_COLUMNS = [("sweep", "TEXT"), ("point_key", "TEXT")]


class RunStore:
    """Run records in SQLite under the user data dir. Every write is one short transaction in WAL
    mode, so a killed process leaves the store readable; a run whose process died is marked
    'interrupted' the next time the store is opened."""

    def __init__(self, path: str | os.PathLike | None = None):
        from .paths import data_dir

        self.path = Path(path) if path else data_dir() / "runs.sqlite"
        self._connect = lambda: sqlite3.connect(self.path, timeout=30)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        self.mark_interrupted()

    def start(self, model: str, config: dict, calibration: str | None, sweep: str | None = None,
              point_key: str | None = None) -> int:
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        sparsity = config.get("pattern") if ":" in str(config.get("pattern")) else str(config.get("sparsity"))
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO runs (created, updated, status, pid, model, method, sparsity, calibration, config, sweep, "
                "point_key) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, os.getpid(), model, config.get("method"), sparsity, calibration, json.dumps(config), sweep,
                 point_key),
            )
            return int(cursor.lastrowid)

    def finish(self, run_id: int, status: str, record: dict | None = None, error: str | None = None) -> None:
        if status not in ("finished", "failed", "cancelled"):
            raise ValueError(f"Unknown final status '{status}'.")
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, updated = ?, record = ?, error = ? WHERE id = ?",
                (status, time.strftime("%Y-%m-%dT%H:%M:%S"), json.dumps(record) if record else None, error, run_id),
            )

    def finished_points(self, sweep: str) -> set[str]:
        """Keys of the sweep's points that already finished: a resumed sweep skips them."""
        with self._connect() as db:
            rows = db.execute("SELECT point_key FROM runs WHERE sweep = ? AND status = 'finished'", (sweep,))
            return {key for (key,) in rows}

    def mark_interrupted(self) -> int:
        """Runs still 'running' whose process is gone were killed: say so."""
        import psutil

        with self._connect() as db:
            rows = db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
            dead = [run_id for run_id, pid in rows if not pid or not psutil.pid_exists(pid)]
            db.executemany("UPDATE runs SET status = 'interrupted' WHERE id = ?", [(r,) for r in dead])
        return len(dead)

    def get(self, run_id: int) -> dict:
        runs = self.list(where="id = ?", params=(run_id,))
        if not runs:
            raise KeyError(f"No run {run_id}.")
        return runs[0]

    def list(self, where: str = "1 = 1", params: tuple = ()) -> list[dict]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(f"SELECT * FROM runs WHERE {where} ORDER BY id", params).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("config", "record"):
                item[key] = json.loads(item[key]) if item[key] else None
            out.append(item)
        return out
