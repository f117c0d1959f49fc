"""Saved calibration sets (`set:NAME`): texts plus metadata, one JSON file per set in the user data
dir, written atomically so a crash never leaves a half-written set."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import SourceError
from ..files import atomic_file, atomic_write_json, clean_stale_temporaries
from ..paths import data_dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def sets_dir() -> Path:
    path = data_dir() / "sets"
    path.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    return path


def check_name(name: str) -> str:
    """The name, or a SourceError saying what a set name may contain."""
    if not _NAME.match(name or ""):
        raise SourceError(
            f"Invalid set name '{name}': use letters, digits, '_', '.', '-' (start with a letter or digit)."
        )
    return name


def _path(name: str) -> Path:
    return sets_dir() / f"{check_name(name)}.json"


def save_set(name: str, records: list[dict], metadata: dict | None = None) -> Path:
    """records: dicts with at least 'text' (and optionally 'ppl', 'kept')."""
    if not records or not all(isinstance(r.get("text"), str) and r["text"].strip() for r in records):
        raise SourceError("A calibration set needs at least one non-empty text, and every record a 'text'.")
    return atomic_write_json(_path(name), {"name": name, "metadata": metadata or {}, "records": records},
                             indent=None)


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


SELF_GENERATED = "self-generated"  # the metadata kind of a set the model wrote (selfgen)


def is_self_generated(name: str) -> bool:
    """Whether saved set `name` holds text a model wrote itself."""
    return (load_set(name).get("metadata") or {}).get("kind") == SELF_GENERATED


def save_windows(name: str, calibration, tokenizer, model_name: str = "") -> Path:
    """A set of calibration windows (a strategy's choice, or a seeded draw): each record holds the window's
    text and its token ids, so a run with the same tokenizer and seqlen uses the ids as they are."""
    records = [{"text": tokenizer.decode(row[:length]), "input_ids": row[:length]}
               for row, length in zip(calibration.input_ids.tolist(), calibration.unpadded_lengths)]
    metadata = {"kind": "windows", "model": model_name, "tokenizer": calibration.tokenizer,
                "seqlen": calibration.seqlen, "calibration": calibration.describe()}
    return save_set(name, records, metadata)


def set_windows(name: str, tokenizer_name: str, seqlen: int):
    """A windows set's token ids as rows of seqlen (padded rows right-padded with `pad_id` of its draw), or
    None when the set holds texts, or windows of another tokenizer or length (then its texts are drawn)."""
    data = load_set(name)
    meta = data.get("metadata") or {}
    if meta.get("kind") != "windows" or meta.get("tokenizer") != tokenizer_name or meta.get("seqlen") != seqlen:
        return None
    pad = (meta.get("calibration") or {}).get("pad_id") or 0
    rows = [r["input_ids"] for r in data["records"]]
    return [row + [pad] * (seqlen - len(row)) for row in rows], [len(row) for row in rows], meta["calibration"]


def list_sets() -> list[str]:
    return sorted(p.stem for p in sets_dir().glob("*.json"))


def delete_set(name: str) -> None:
    path = _path(name)
    if not path.exists():
        raise SourceError(f"No saved calibration set '{name}'.")
    path.unlink()


SET_IN_SPEC = re.compile(r"(?<!\w)set:([^,=\s]+)")
DELETED = " (deleted)"


def mark_deleted(spec: str | None, saved: set[str] | None = None) -> str | None:
    """`spec` with "(deleted)" after each set:NAME in it (alone or in a mix) that is no longer saved: what a
    run that used a deleted set shows."""
    if not spec or "set:" not in spec:
        return spec
    saved = set(list_sets()) if saved is None else saved
    return SET_IN_SPEC.sub(lambda m: m.group(0) + ("" if m.group(1) in saved else DELETED), spec)


def runs_using(name: str, runs: list[dict]) -> list[int]:
    """The ids of the runs whose calibration names set:NAME (alone or in a mix)."""
    return [r["id"] for r in runs if name in SET_IN_SPEC.findall(r.get("calibration") or "")]


def export_set(name: str, path: str | os.PathLike) -> Path:
    """Write a set's records to .jsonl or .parquet (metadata goes into a .meta.json beside it)."""
    data = load_set(name)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".parquet"):
        raise SourceError(f"Export to .jsonl or .parquet, not '{suffix or path.name}'.")
    with atomic_file(path) as tmp:
        if suffix == ".jsonl":
            with open(tmp, "w") as handle:
                for record in data["records"]:
                    handle.write(json.dumps(record) + "\n")
        else:
            import pandas as pd

            pd.DataFrame(data["records"]).to_parquet(tmp)
    atomic_write_json(path.with_suffix(".meta.json"), data["metadata"])
    return path
