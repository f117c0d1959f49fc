"""Saved calibration sets (`set:NAME`): texts plus metadata, one JSON file per set in the user data
dir, written atomically so a crash never leaves a half-written set."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from .errors import SourceError
from .paths import data_dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def sets_dir() -> Path:
    path = data_dir() / "sets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _path(name: str) -> Path:
    if not _NAME.match(name or ""):
        raise SourceError(
            f"Invalid set name '{name}': use letters, digits, '_', '.', '-' (start with a letter or digit)."
        )
    return sets_dir() / f"{name}.json"


def save_set(name: str, records: list[dict], metadata: dict | None = None) -> Path:
    """records: dicts with at least 'text' (and optionally 'ppl', 'kept')."""
    if not records or not all(isinstance(r.get("text"), str) and r["text"].strip() for r in records):
        raise SourceError("A calibration set needs at least one non-empty text, and every record a 'text'.")
    path = _path(name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"name": name, "metadata": metadata or {}, "records": records}, handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_set(name: str) -> dict:
    path = _path(name)
    if not path.exists():
        known = ", ".join(list_sets()) or "none saved yet"
        raise SourceError(f"No saved calibration set '{name}' (known: {known}).")
    with open(path) as handle:
        return json.load(handle)


def set_texts(name: str) -> list[str]:
    """Texts of a set that were kept (self-generated sets mark filtered texts kept=False)."""
    return [r["text"] for r in load_set(name)["records"] if r.get("kept", True)]


def list_sets() -> list[str]:
    return sorted(p.stem for p in sets_dir().glob("*.json"))


def delete_set(name: str) -> None:
    path = _path(name)
    if not path.exists():
        raise SourceError(f"No saved calibration set '{name}'.")
    path.unlink()


def export_set(name: str, path: str | os.PathLike) -> Path:
    """Write a set's records to .jsonl or .parquet (metadata goes into a .meta.json beside it)."""
    data = load_set(name)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise SourceError(f"Export to .jsonl or .parquet, not '{suffix or path.name}'.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".jsonl":
            with open(tmp, "w") as handle:
                for record in data["records"]:
                    handle.write(json.dumps(record) + "\n")
        else:
            import pandas as pd

            pd.DataFrame(data["records"]).to_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    path.with_suffix(".meta.json").write_text(json.dumps(data["metadata"], indent=2))
    return path
