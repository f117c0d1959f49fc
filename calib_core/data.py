"""Text sources -> documents -> calibration samples (paper-notes section 4).

A source is a spec string:
  builtin:wiki|news|books|code      offline corpora, split into a calibration pool and an eval part
  hf:NAME[:CONFIG[:SPLIT]]          a hub dataset, streamed, first `limit` documents
  file:PATH                         .txt (one document), .jsonl, .json, .csv, .parquet (a text column)
  set:NAME                          a saved calibration set
  tokens:PATH                       a .pt/.npy [nsamples, seqlen] tensor of token ids, used as is
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import assets, hub, sets
from .errors import SourceError

MODES = ("document", "concat")
FILE_TYPES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
_TEXT_COLUMNS = ("text", "content", "document", "body", "article", "sentence")
HF_DEFAULT_LIMIT = 5000


@dataclass
class CalibrationSet:
    """nsamples x seqlen token ids and everything needed to reproduce or trace them."""

    input_ids: torch.Tensor
    source: str
    mode: str
    seed: int
    tokenizer: str
    fingerprint: str
    documents: int = 0

    @property
    def nsamples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seqlen(self) -> int:
        return self.input_ids.shape[1]

    def describe(self) -> dict:
        return {
            "source": self.source, "mode": self.mode, "seed": self.seed, "nsamples": self.nsamples,
            "seqlen": self.seqlen, "tokenizer": self.tokenizer, "fingerprint": self.fingerprint,
            "documents": self.documents,
        }


def fingerprint_tokens(ids: torch.Tensor) -> str:
    data = ids.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(str(tuple(ids.shape)).encode() + data).hexdigest()[:16]


# ---------------------------------------------------------------- sources -> documents


def parse_source(spec: str) -> tuple[str, str]:
    kind, sep, rest = (spec or "").partition(":")
    if not sep or kind not in ("builtin", "hf", "file", "set", "tokens") or not rest:
        raise SourceError(
            f"Bad source '{spec}'. Use builtin:wiki|news|books|code, hf:NAME[:CONFIG[:SPLIT]], "
            f"file:PATH, set:NAME or tokens:PATH."
        )
    return kind, rest


def load_documents(spec: str, part: str = "calib", limit: int | None = None, text_column: str | None = None) -> list[str]:
    """Documents of a text source. `part` picks a builtin corpus' calibration pool or held-out
    eval part; other sources ignore it (choose the split in the spec)."""
    kind, rest = parse_source(spec)
    if kind == "builtin":
        if part not in ("calib", "eval", "all"):
            raise SourceError(f"part must be calib, eval or all, got '{part}'.")
        docs = [d["text"] for d in assets.builtin_documents(rest) if part == "all" or d["split"] == part]
    elif kind == "hf":
        docs = _hf_documents(rest, limit, text_column)
    elif kind == "file":
        docs = read_text_file(Path(rest).expanduser(), text_column)
    elif kind == "set":
        docs = sets.set_texts(rest)
    else:
        raise SourceError(f"'{spec}' is a token tensor, not text: it is used as calibration samples as is.")
    docs = [d for d in docs if d and d.strip()]
    if limit:
        docs = docs[:limit]
    if not docs:
        raise SourceError(f"Source '{spec}' has no non-empty text.")
    return docs


def _hf_documents(rest: str, limit: int | None, text_column: str | None) -> list[str]:
    parts = rest.split(":")
    name, config = parts[0], (parts[1] or None) if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    if not hub.hub_reachable():
        raise SourceError(
            f"Dataset '{name}' streams from the Hugging Face hub, which cannot be reached. Offline, use "
            f"builtin:wiki|news|books|code or a local file:PATH."
        )
    import datasets

    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:  # datasets raises many types for bad names/configs
        raise SourceError(f"Could not open hub dataset '{rest}': {str(exc).splitlines()[0]}") from exc
    docs = []
    column = text_column
    for row in stream:
        column = column or _detect_text_column({k: [v] for k, v in row.items()}, f"hf:{rest}")
        docs.append(str(row[column]))
        if limit and len(docs) >= limit:
            break
    return docs


def _detect_text_column(columns: dict[str, list], where: str) -> str:
    for name in _TEXT_COLUMNS:
        if name in columns:
            return name
    textual = {k: v for k, v in columns.items() if v and all(isinstance(x, str) for x in v[:50])}
    if not textual:
        raise SourceError(
            f"{where} has no text column (columns: {', '.join(map(str, columns)) or 'none'}). Name "
            f"one with a string column, or pass its name as the text column."
        )
    return max(textual, key=lambda k: sum(len(x) for x in textual[k][:50]))


def read_text_file(path: Path, text_column: str | None = None) -> list[str]:
    """Documents from a local file, with a specific error for every way the file can be wrong."""
    if not path.exists():
        raise SourceError(f"File '{path}' does not exist.")
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise SourceError(f"'{path.name}': unsupported file type '{suffix}'. Use one of {', '.join(FILE_TYPES)}.")
    if path.stat().st_size == 0:
        raise SourceError(f"'{path.name}' is empty.")
    if suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise SourceError(f"'{path.name}' is not a readable parquet file: {exc}") from exc
        return _column_texts({c: frame[c].tolist() for c in frame.columns}, path.name, text_column)
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise SourceError(f"'{path.name}' looks binary (NUL bytes), not {suffix} text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"'{path.name}' is not UTF-8 text (byte {exc.start}): re-save it as UTF-8."
        ) from exc
    if not text.strip():
        raise SourceError(f"'{path.name}' contains only whitespace.")
    if suffix == ".txt":
        return [text]
    if suffix == ".csv":
        import io

        import pandas as pd

        try:
            frame = pd.read_csv(io.StringIO(text))
        except Exception as exc:
            raise SourceError(f"'{path.name}' is not valid CSV: {exc}") from exc
        return _column_texts({c: frame[c].tolist() for c in frame.columns}, path.name, text_column)
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"'{path.name}' is not valid {suffix[1:].upper()}: {exc}") from exc
    if isinstance(rows, dict):  # {"data": [...]} wraps the records; any other object is one record
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 and len(rows) == 1 else [rows]
    if rows and all(isinstance(r, str) for r in rows):
        return rows
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise SourceError(f"'{path.name}': expected a list of strings or of objects with a text field.")
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return _column_texts(columns, path.name, text_column)


def _column_texts(columns: dict[str, list], where: str, text_column: str | None) -> list[str]:
    if text_column is not None:
        if text_column not in columns:
            raise SourceError(f"{where} has no column '{text_column}' (columns: {', '.join(map(str, columns))}).")
        column = text_column
    else:
        column = _detect_text_column(columns, where)
    values = [v for v in columns[column] if isinstance(v, str)]
    if not values:
        raise SourceError(f"{where}: column '{column}' holds no strings.")
    return values


# ---------------------------------------------------------------- documents -> samples


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    # Long documents are fine here: we cut windows ourselves, so silence the max-length warning.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def sample_windows(token_docs: list[list[int]], nsamples: int, seqlen: int, seed: int, mode: str) -> torch.Tensor:
    """Seeded random windows of seqlen tokens (document mode or concatenate mode)."""
    if mode not in MODES:
        raise SourceError(f"Sampling mode must be one of {MODES}, got '{mode}'.")
    if nsamples < 1 or seqlen < 2:
        raise SourceError(f"Need nsamples >= 1 and seqlen >= 2, got {nsamples} x {seqlen}.")
    rng = random.Random(seed)
    if mode == "document":
        eligible = [d for d in token_docs if len(d) > seqlen]
        if not eligible:
            longest = max((len(d) for d in token_docs), default=0)
            raise SourceError(
                f"No document has more than {seqlen} tokens (longest: {longest}). Lower seqlen or use "
                f"concatenate mode."
            )
        rows = []
        for _ in range(nsamples):
            doc = eligible[rng.randrange(len(eligible))]
            start = rng.randrange(len(doc) - seqlen)
            rows.append(doc[start : start + seqlen])
    else:
        stream = [t for d in token_docs for t in d]
        if len(stream) < seqlen:
            raise SourceError(f"The source has {len(stream)} tokens in all, fewer than seqlen {seqlen}.")
        rows = []
        for _ in range(nsamples):
            start = rng.randrange(len(stream) - seqlen + 1)
            rows.append(stream[start : start + seqlen])
    return torch.tensor(rows, dtype=torch.long)


def build_calibration(
    spec: str,
    tokenizer,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    mode: str = "document",
    text_column: str | None = None,
    limit: int | None = None,
    concat_separator: str = "\n\n",
) -> CalibrationSet:
    """Draw calibration samples. Identical inputs give identical samples (and fingerprint)."""
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    kind, rest = parse_source(spec)
    if kind == "tokens":
        ids = load_token_tensor(Path(rest).expanduser(), len(tokenizer))
        return CalibrationSet(ids, spec, "tokens", seed, tok_name, fingerprint_tokens(ids))
    if kind == "hf" and limit is None:
        limit = HF_DEFAULT_LIMIT
    docs = load_documents(spec, "calib", limit, text_column)
    if mode == "concat":
        token_docs = _encode(tokenizer, [concat_separator.join(docs)])
    else:
        token_docs = _encode(tokenizer, docs)
    ids = sample_windows(token_docs, nsamples, seqlen, seed, mode)
    return CalibrationSet(ids, spec, mode, seed, tok_name, fingerprint_tokens(ids), len(docs))


def load_token_tensor(path: Path, vocab_size: int | None = None) -> torch.Tensor:
    if not path.exists():
        raise SourceError(f"Token file '{path}' does not exist.")
    try:
        if path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "input_ids" in obj:
                obj = obj["input_ids"]
            ids = torch.as_tensor(obj)
        elif path.suffix == ".npy":
            ids = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            raise SourceError(f"'{path.name}': token tensors must be .pt or .npy.")
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"Could not read token tensor '{path.name}': {exc}") from exc
    if ids.dim() != 2 or ids.numel() == 0:
        raise SourceError(f"'{path.name}' must hold a non-empty [nsamples, seqlen] tensor, got shape {tuple(ids.shape)}.")
    if ids.is_floating_point() or ids.is_complex():
        raise SourceError(f"'{path.name}' holds {ids.dtype} values; token ids must be integers.")
    ids = ids.to(torch.long)
    if int(ids.min()) < 0 or (vocab_size is not None and int(ids.max()) >= vocab_size):
        raise SourceError(f"'{path.name}' has token ids outside the tokenizer's vocabulary [0, {vocab_size}).")
    return ids
