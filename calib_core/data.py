"""Text sources -> documents -> calibration samples.

A source is a spec string:
  builtin:wiki|news|books|code      offline corpora, split into a calibration pool and an eval part
  hf:NAME[:CONFIG[:SPLIT]]          a hub dataset, streamed as far as the sampling needs (see build_calibration)
  file:PATH                         .txt (one document), .jsonl, .json, .csv, .parquet (a text column)
  set:NAME                          a saved calibration set
  tokens:PATH                       a .pt/.npy [nsamples, seqlen] tensor of token ids, used as is

Sampling modes (all seeded, so (source, nsamples, seqlen, seed, tokenizer) fixes the samples):
  document      a random document with more than seqlen tokens, a random seqlen window of it
                (the Wanda/SparseGPT C4 loaders)
  concat        all documents joined with `concat_separator`, tokenized once, random seqlen windows
                (the authors' Wanda code joins self-generated texts with " ")
  document_pad  a random whole text with more than seqlen - 3 tokens (tokenized with the tokenizer's
                special tokens); one of at most seqlen tokens is right-padded with token id 0, a longer
                one gives a random seqlen window (the authors' OWL/DSnoT code for self-generated texts)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import assets, hub, sets
from .errors import SourceError

MODES = ("document", "concat", "document_pad")
DEFAULT_CONCAT_SEPARATOR = "\n\n"
FILE_TYPES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
_TEXT_COLUMNS = ("text", "content", "document", "body", "article", "sentence")
# document_pad copies the authors' OWL/DSnoT loader: texts need more than seqlen - 3 tokens, and short
# ones are padded with id 0 whatever token that is (the pad tokens are fed to the model like any other).
DOCUMENT_PAD_ID = 0
DOCUMENT_PAD_SLACK = 3
# Hub sources are streamed. Document modes read until 10 documents per sample qualify: the paper
# draws from whole shards, so windows rarely share a document and the seed-to-seed spread is real.
# Concat mode reads about 10 x nsamples x seqlen tokens. Either way reading stops at the scan cap.
HUB_ELIGIBLE_PER_SAMPLE = 10
HUB_CONCAT_TOKENS_PER_SAMPLED_TOKEN = 10
HUB_SCAN_MAX_DOCUMENTS = 200_000
HUB_SCAN_MAX_CHARACTERS = 1_000_000_000
_HUB_TOKENIZE_BATCH = 256


@dataclass
class CalibrationSet:
    """nsamples x seqlen token ids and everything needed to reproduce or trace them."""

    input_ids: torch.Tensor
    source: str
    mode: str
    seed: int
    tokenizer: str
    fingerprint: str
    documents: int = 0  # documents read from the source
    concat_separator: str | None = None  # concat mode only
    pad_id: int | None = None  # document_pad only
    padded_samples: int = 0
    eligible_documents: int | None = None  # documents long enough for a window (document modes)
    special_tokens: bool = False  # texts tokenized with the tokenizer's default special tokens (BOS ...)
    hub_scan: dict | None = None  # how far a streamed hub dataset was read, and why it stopped
    notes: list[str] = field(default_factory=list)
    unpadded_lengths: list[int] = field(default_factory=list, repr=False)  # real tokens per sample

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
            "documents": self.documents, "eligible_documents": self.eligible_documents,
            "concat_separator": self.concat_separator, "pad_id": self.pad_id,
            "padded_samples": self.padded_samples, "special_tokens": self.special_tokens,
            "hub_scan": self.hub_scan, "notes": self.notes,
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


def load_documents(spec: str, part: str = "calib", limit: int | None = None, text_column: str | None = None,
                   keep_empty: bool = False) -> list[str]:
    """Documents of a text source. `part` picks a builtin corpus' calibration pool or held-out
    eval part; other sources ignore it (choose the split in the spec). Empty and whitespace-only
    rows are dropped unless `keep_empty` (the WikiText-2 perplexity protocol joins them too)."""
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
    if not keep_empty:
        docs = [d for d in docs if d and d.strip()]
    if limit:
        docs = docs[:limit]
    if not any(d and d.strip() for d in docs):
        raise SourceError(f"Source '{spec}' has no non-empty text.")
    return docs


def _hf_rows(rest: str, text_column: str | None):
    """Every row's text of a hub dataset, streamed in order (empty rows included)."""
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
    column = text_column
    for row in stream:
        column = column or _detect_text_column({k: [v] for k, v in row.items()}, f"hf:{rest}")
        yield str(row[column])


def _hf_documents(rest: str, limit: int | None, text_column: str | None) -> list[str]:
    return list(itertools.islice(_hf_rows(rest, text_column), limit))


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


def _encode(tokenizer, texts: list[str], special_tokens: bool = False) -> list[list[int]]:
    # Long documents are fine here: we cut windows ourselves, so silence the max-length warning.
    return tokenizer(texts, add_special_tokens=special_tokens, verbose=False)["input_ids"]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise SourceError(f"Sampling mode must be one of {', '.join(MODES)}, got '{mode}'.")


def eligibility_floor(mode: str, seqlen: int) -> int | None:
    """A document can give a sample in `mode` when it has MORE than this many tokens (None: concat
    mode uses the joined stream, not documents)."""
    check_mode(mode)
    return {"document": seqlen, "document_pad": seqlen - DOCUMENT_PAD_SLACK}.get(mode)


def _too_short(mode: str, seqlen: int, lengths: list[int], where: str = "") -> SourceError:
    longest = max(lengths, default=0)
    counted = f"{len(lengths)} {'documents' if mode == 'document' else 'texts'}{where}, longest: {longest} tokens"
    if mode == "document":
        return SourceError(
            f"No document has more than {seqlen} tokens ({counted}). Lower seqlen, use concat mode, or use "
            f"longer texts (self-generated: a larger max_new_tokens)."
        )
    return SourceError(
        f"document_pad needs texts with more than seqlen - {DOCUMENT_PAD_SLACK} = {seqlen - DOCUMENT_PAD_SLACK} "
        f"tokens; none has ({counted}). Generate longer texts (a larger max_new_tokens; the paper generates up "
        f"to 2048 new tokens) or lower seqlen."
    )


@dataclass
class Windows:
    ids: torch.Tensor  # [nsamples, seqlen]
    unpadded_lengths: list[int]  # real tokens per row: seqlen, except document_pad rows padded with DOCUMENT_PAD_ID


def draw_windows(token_docs: list, nsamples: int, seqlen: int, seed: int, mode: str) -> Windows:
    """Seeded random samples of seqlen tokens from tokenized documents (see MODES in the module doc)."""
    check_mode(mode)
    if nsamples < 1 or seqlen < 2:
        raise SourceError(f"Need nsamples >= 1 and seqlen >= 2, got {nsamples} x {seqlen}.")
    rng = random.Random(seed)
    rows, lengths = [], []
    if mode == "concat":
        stream = [t for d in token_docs for t in d]
        if len(stream) < seqlen:
            raise SourceError(f"The source has {len(stream)} tokens in all, fewer than seqlen {seqlen}.")
        for _ in range(nsamples):
            start = rng.randrange(len(stream) - seqlen + 1)
            rows.append(stream[start : start + seqlen])
            lengths.append(seqlen)
    else:
        floor = eligibility_floor(mode, seqlen)
        eligible = [d for d in token_docs if len(d) > floor]
        if not eligible:
            raise _too_short(mode, seqlen, [len(d) for d in token_docs])
        for _ in range(nsamples):
            doc = eligible[rng.randrange(len(eligible))]
            if len(doc) > seqlen:
                start = rng.randrange(len(doc) - seqlen)
                rows.append(doc[start : start + seqlen])
                lengths.append(seqlen)
            else:  # document_pad: the whole text, seqlen - 2 .. seqlen tokens
                rows.append(list(doc) + [DOCUMENT_PAD_ID] * (seqlen - len(doc)))
                lengths.append(len(doc))
    return Windows(torch.from_numpy(np.asarray(rows, dtype=np.int64)), lengths)


def sample_windows(token_docs: list, nsamples: int, seqlen: int, seed: int, mode: str) -> torch.Tensor:
    """The token ids of draw_windows."""
    return draw_windows(token_docs, nsamples, seqlen, seed, mode).ids


def build_calibration(
    spec: str,
    tokenizer,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    mode: str = "document",
    text_column: str | None = None,
    limit: int | None = None,
    concat_separator: str = DEFAULT_CONCAT_SEPARATOR,
) -> CalibrationSet:
    """Draw calibration samples. Identical inputs give identical samples (and fingerprint).

    `limit` keeps the first `limit` documents. Without it a hub source is streamed only as far as
    `mode` needs (HUB_* above); `hub_scan` says how far and why reading stopped, and `notes` say
    when the pool is smaller than wanted."""
    check_mode(mode)
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    kind, rest = parse_source(spec)
    if kind == "tokens":
        ids = load_token_tensor(Path(rest).expanduser(), len(tokenizer))
        return CalibrationSet(ids, spec, "tokens", seed, tok_name, fingerprint_tokens(ids),
                              unpadded_lengths=[ids.shape[1]] * ids.shape[0])
    # The authors' OWL/DSnoT loader tokenizes each text with the tokenizer's defaults (a BOS first for
    # Llama tokenizers); the other modes keep this project's plain tokenization.
    special_tokens = mode == "document_pad"
    hub_scan, notes = None, []
    if kind == "hf" and limit is None:
        token_docs, documents, hub_scan, notes = _hub_pool(rest, text_column, tokenizer, mode, nsamples, seqlen,
                                                           concat_separator, special_tokens)
    else:
        docs = load_documents(spec, "calib", limit, text_column)
        documents = len(docs)
        texts = [concat_separator.join(docs)] if mode == "concat" else docs
        token_docs = _encode(tokenizer, texts, special_tokens)
    windows = draw_windows(token_docs, nsamples, seqlen, seed, mode)
    floor = eligibility_floor(mode, seqlen)
    return CalibrationSet(
        windows.ids, spec, mode, seed, tok_name, fingerprint_tokens(windows.ids), documents,
        concat_separator=concat_separator if mode == "concat" else None,
        pad_id=DOCUMENT_PAD_ID if mode == "document_pad" else None,
        padded_samples=sum(n < seqlen for n in windows.unpadded_lengths),
        eligible_documents=None if floor is None else sum(len(d) > floor for d in token_docs),
        special_tokens=special_tokens, hub_scan=hub_scan, notes=notes, unpadded_lengths=windows.unpadded_lengths,
    )


def _tokenized(texts, tokenizer, special_tokens: bool):
    """(text, token ids) of each non-empty text, tokenized in batches as the texts arrive."""
    texts = (t for t in texts if t.strip())
    while batch := list(itertools.islice(texts, _HUB_TOKENIZE_BATCH)):
        yield from zip(batch, _encode(tokenizer, batch, special_tokens))


def _hub_pool(rest: str, text_column: str | None, tokenizer, mode: str, nsamples: int, seqlen: int,
              separator: str, special_tokens: bool) -> tuple[list, int, dict, list[str]]:
    """Stream a hub dataset until the pool is big enough for `mode` or the scan cap is hit.
    Returns (token docs for draw_windows, documents read, scan summary, notes)."""
    floor = eligibility_floor(mode, seqlen)
    if floor is None:
        wanted, unit = HUB_CONCAT_TOKENS_PER_SAMPLED_TOKEN * nsamples * seqlen, "tokens"
    else:
        wanted, unit = HUB_ELIGIBLE_PER_SAMPLE * nsamples, f"documents with more than {floor} tokens"
    texts, token_docs, lengths = [], [], []
    have = characters = 0
    stopped = "end of dataset"
    for text, ids in _tokenized(_hf_rows(rest, text_column), tokenizer, special_tokens):
        characters += len(text)
        lengths.append(len(ids))
        if floor is None:
            texts.append(text)
            have += len(ids)
        elif len(ids) > floor:  # only qualifying documents are kept, as compact arrays
            token_docs.append(np.asarray(ids, dtype=np.int32))
            have += 1
        if have >= wanted:
            stopped = "enough"
            break
        if len(lengths) >= HUB_SCAN_MAX_DOCUMENTS or characters >= HUB_SCAN_MAX_CHARACTERS:
            stopped = "scan cap"
            break
    read = len(lengths)
    scan = {"documents_read": read, "characters_read": characters, "wanted": f"{wanted} {unit}",
            "found": have, "stopped": stopped, "max_documents": HUB_SCAN_MAX_DOCUMENTS,
            "max_characters": HUB_SCAN_MAX_CHARACTERS}
    if not read:
        raise SourceError(f"Hub dataset '{rest}' has no non-empty text.")
    if floor is not None and not token_docs:
        raise _too_short(mode, seqlen, lengths, f" read from hf:{rest}, stopped at the {stopped}")
    notes = []
    if have < wanted:
        where = ("the scan cap" if stopped == "scan cap" else "the end of the dataset")
        notes.append(
            f"hf:{rest}: reading stopped at {where} ({read} documents, {characters} characters) with {have} of the "
            f"{wanted} {unit} wanted ("
            + (f"{HUB_CONCAT_TOKENS_PER_SAMPLED_TOKEN} x nsamples x seqlen); " if floor is None
               else f"{HUB_ELIGIBLE_PER_SAMPLE} x nsamples); ")
            + ("windows will overlap more." if floor is None else "windows will repeat documents more often.")
        )
    if floor is None:
        token_docs = _encode(tokenizer, [separator.join(texts)])
    return token_docs, read, scan, notes


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
