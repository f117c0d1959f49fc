"""A source's texts -> calibration samples (the source specs and their texts: documents.py).

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
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import assets
from ..errors import InsufficientMemoryError, SourceError
from . import sets
from .documents import parse_source, source_texts
from .mix import parse_mix, random_token_rows
from .tokens import Pool, ReadLimits, read_pool

BUILTIN_SOURCES = tuple(f"builtin:{name}" for name in assets.BUILTIN_CORPORA)
# How calibration windows are drawn (build_calibration), each with the help every front end shows.
MODES = {
    "document": "a random window of one document longer than seqlen",
    "concat": "windows of all texts joined with the concat separator (a blank line by default; the authors' "
              "Wanda code joins self-generated texts with ' ')",
    "document_pad": "a whole text with more than seqlen - 3 tokens, right-padded with token id 0 (the authors' "
                    "OWL/DSnoT code for self-generated data)",
}
DEFAULT_CONCAT_SEPARATOR = "\n\n"
# document_pad copies the authors' OWL/DSnoT loader: texts need more than seqlen - 3 tokens, and short
# ones are padded with id 0 whatever token that is (the pad tokens are fed to the model like any other).
DOCUMENT_PAD_ID = 0
DOCUMENT_PAD_SLACK = 3
# Reading is bounded: a source is read only until the sampling has enough, and never more than its read
# budget. Files, sets and hub sources with a document limit stop after max(READ_TOKENS_FLOOR,
# READ_TOKENS_PER_SAMPLED_TOKEN x nsamples x seqlen) tokens (a source smaller than the floor is read
# whole). Streamed hub sources stop once 10 documents per sample qualify (document modes: the paper
# draws from whole shards, so windows rarely share a document and the seed-to-seed spread is real) or
# READ_TOKENS_PER_SAMPLED_TOKEN x nsamples x seqlen tokens are joined (concat), or at the scan cap.
# Builtin corpora are small and fixed: always read whole.
READ_TOKENS_FLOOR = 2_000_000
READ_TOKENS_PER_SAMPLED_TOKEN = 10
HUB_ELIGIBLE_PER_SAMPLE = 10
HUB_SCAN_MAX_DOCUMENTS = 200_000
HUB_SCAN_MAX_CHARACTERS = 1_000_000_000


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
    read_scan: dict | None = None  # a file or set cut at its read budget: how far it was read
    notes: list[str] = field(default_factory=list)
    mix: dict | None = None  # mix: sources only: each source's weight, windows and fingerprint
    strategy: dict | None = None  # a selection strategy's record (data/strategies/); None: the seeded draw
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
            "hub_scan": self.hub_scan, "read_scan": self.read_scan, "notes": self.notes,
            **({"mix": self.mix} if self.mix is not None else {}),
            **({"strategy": self.strategy} if self.strategy is not None else {}),
        }


def fingerprint_tokens(ids: torch.Tensor) -> str:
    data = ids.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(str(tuple(ids.shape)).encode() + data).hexdigest()[:16]


# ---------------------------------------------------------------- documents -> samples


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
            f"No document has more than {seqlen} tokens ({counted}). Lower seqlen, use concat mode (CLI: --mode "
            f"concat; app: Prune, More settings, Sampling mode), or use longer texts (self-generated: a larger "
            f"max_new_tokens)."
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
        stream = np.concatenate([np.asarray(d, dtype=np.int64) for d in token_docs] or [np.zeros(0, np.int64)])
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

    `limit` keeps the first `limit` documents. The source is read only as far as the sampling needs
    (see READ_* and HUB_* above); `hub_scan` / `read_scan` say how far and why reading stopped, and
    `notes` say when the pool is smaller than wanted."""
    check_mode(mode)
    if nsamples < 1 or seqlen < 2:
        raise SourceError(f"Need nsamples >= 1 and seqlen >= 2, got {nsamples} x {seqlen}.")
    check_windows_fit(nsamples, seqlen)
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    kind, rest = parse_source(spec)
    if kind == "tokens":
        ids = load_token_tensor(Path(rest).expanduser(), len(tokenizer))
        return CalibrationSet(ids, spec, "tokens", seed, tok_name, fingerprint_tokens(ids),
                              unpadded_lengths=[ids.shape[1]] * ids.shape[0])
    if kind == "set":
        saved = sets.set_windows(rest, tok_name, seqlen)
        if saved is not None:
            return _saved_windows(spec, saved, nsamples, seed, tok_name)
    if kind == "mix":
        return _build_mix(spec, rest, tokenizer, nsamples, seqlen, seed, mode, text_column, limit, concat_separator)
    # The authors' OWL/DSnoT loader tokenizes each text with the tokenizer's defaults (a BOS first for
    # Llama tokenizers); the other modes keep this project's plain tokenization.
    special_tokens = mode == "document_pad"
    floor = eligibility_floor(mode, seqlen)
    streamed_hub = kind == "hf" and limit is None
    limits = _read_limits(kind, floor, nsamples, seqlen, streamed_hub)
    texts = source_texts(spec, "calib", text_column)
    if limit:
        texts = itertools.islice((t for t in texts if not isinstance(t, str) or t.strip()), limit)
    pool = read_pool(texts, tokenizer, floor, concat_separator, special_tokens, limits)
    if not pool.documents:
        raise SourceError(f"Source '{spec}' has no non-empty text.")
    scan = _scan_summary(pool, limits, floor)
    if floor is not None and not pool.token_docs:
        where = f" read from {spec}, stopped at the {pool.stopped}" if pool.stopped != "end of source" else ""
        raise _too_short(mode, seqlen, pool.lengths, where)
    windows = draw_windows(pool.token_docs, nsamples, seqlen, seed, mode)
    return CalibrationSet(
        windows.ids, spec, mode, seed, tok_name, fingerprint_tokens(windows.ids), pool.documents,
        concat_separator=concat_separator if mode == "concat" else None,
        pad_id=DOCUMENT_PAD_ID if mode == "document_pad" else None,
        padded_samples=sum(n < seqlen for n in windows.unpadded_lengths),
        eligible_documents=None if floor is None else len(pool.token_docs),
        special_tokens=special_tokens, hub_scan=scan if streamed_hub else None,
        read_scan=scan if not streamed_hub and pool.stopped == "read budget" else None,
        notes=_pool_notes(spec, pool, limits, floor, streamed_hub), unpadded_lengths=windows.unpadded_lengths,
    )


def _saved_windows(spec: str, saved, nsamples: int, seed: int, tok_name: str) -> CalibrationSet:
    """The first nsamples windows of a windows set, as they were chosen (see sets.save_windows)."""
    rows, lengths, made_by = saved
    if len(rows) < nsamples:
        raise SourceError(f"{spec} holds {len(rows)} windows, fewer than nsamples {nsamples}: lower nsamples or save "
                          f"more windows.")
    ids = torch.tensor(rows[:nsamples], dtype=torch.long)
    return CalibrationSet(ids, spec, "windows", seed, tok_name, fingerprint_tokens(ids),
                          padded_samples=sum(n < ids.shape[1] for n in lengths[:nsamples]),
                          notes=[f"{spec}: the set's saved windows, used as they are (made from "
                                 f"{made_by.get('source')} by {(made_by.get('strategy') or {}).get('name', 'random')})"],
                          strategy=made_by.get("strategy"), unpadded_lengths=lengths[:nsamples])


def _build_mix(spec: str, rest: str, tokenizer, nsamples: int, seqlen: int, seed: int, mode: str,
               text_column, limit, concat_separator: str) -> CalibrationSet:
    """Each source's share of the windows drawn as that source alone would draw them, stacked in spec
    order, then the random-token rows (see mix.py)."""
    mix = parse_mix(rest)
    counts, random_rows = mix.counts(nsamples)
    parts, lengths, documents, notes, components = [], [], 0, [], []
    for (source, weight), count in zip(mix.sources, counts):
        component = {"source": source, "weight": weight, "windows": count}
        if count:
            drawn = build_calibration(source, tokenizer, count, seqlen, seed, mode, text_column, limit,
                                      concat_separator)
            parts.append(drawn.input_ids)
            lengths += drawn.unpadded_lengths
            documents += drawn.documents
            notes += drawn.notes
            component["fingerprint"] = drawn.fingerprint
        components.append(component)
    if random_rows:
        parts.append(random_token_rows(random_rows, seqlen, len(tokenizer), seed))
        lengths += [seqlen] * random_rows
    ids = torch.cat(parts)
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    return CalibrationSet(
        ids, spec, mode, seed, tok_name, fingerprint_tokens(ids), documents,
        concat_separator=concat_separator if mode == "concat" else None,
        pad_id=DOCUMENT_PAD_ID if mode == "document_pad" else None,
        padded_samples=sum(n < seqlen for n in lengths), special_tokens=mode == "document_pad", notes=notes,
        mix={"sources": components, "random_fraction": mix.random_fraction, "random_rows": random_rows},
        unpadded_lengths=lengths)


def check_windows_fit(nsamples: int, seqlen: int) -> None:
    """Refuse, before reading anything, samples whose token ids alone would not fit in memory."""
    import psutil

    needed = 2 * 8 * nsamples * seqlen  # the drawn rows and the int64 tensor made from them
    available = psutil.virtual_memory().available
    if needed > available / 2:
        raise InsufficientMemoryError(
            f"{nsamples} x {seqlen} calibration tokens need {needed / 1024**3:.1f} GiB for their ids alone; "
            f"{available / 1024**3:.1f} GiB is available. Lower nsamples or seqlen.")


def read_budget(nsamples: int, seqlen: int) -> int:
    """Tokens a file, set or limited hub source is read to at most (see READ_TOKENS_FLOOR)."""
    return max(READ_TOKENS_FLOOR, READ_TOKENS_PER_SAMPLED_TOKEN * nsamples * seqlen)


def _read_limits(kind: str, floor: int | None, nsamples: int, seqlen: int, streamed_hub: bool) -> ReadLimits:
    if kind == "builtin":
        return ReadLimits()
    if not streamed_hub:
        return ReadLimits(max_tokens=read_budget(nsamples, seqlen))
    enough = (READ_TOKENS_PER_SAMPLED_TOKEN * nsamples * seqlen if floor is None
              else HUB_ELIGIBLE_PER_SAMPLE * nsamples)
    return ReadLimits(enough=enough, max_documents=HUB_SCAN_MAX_DOCUMENTS, max_characters=HUB_SCAN_MAX_CHARACTERS)


def _wanted(limits: ReadLimits, floor: int | None) -> str:
    unit = "tokens" if floor is None else f"documents with more than {floor} tokens"
    return f"{limits.enough} {unit}"


def _scan_summary(pool: Pool, limits: ReadLimits, floor: int | None) -> dict:
    summary = {"documents_read": pool.documents, "characters_read": pool.characters, "tokens_read": pool.tokens,
               "found": pool.found, "stopped": pool.stopped}
    if limits.enough is not None:
        summary.update(wanted=_wanted(limits, floor), max_documents=limits.max_documents,
                       max_characters=limits.max_characters)
    if limits.max_tokens is not None:
        summary["read_budget_tokens"] = limits.max_tokens
    return summary


def _pool_notes(spec: str, pool: Pool, limits: ReadLimits, floor: int | None, streamed_hub: bool) -> list[str]:
    if pool.stopped == "read budget":
        return [f"{spec}: reading stopped at the read budget of {limits.max_tokens} tokens (max({READ_TOKENS_FLOOR}, "
                f"{READ_TOKENS_PER_SAMPLED_TOKEN} x nsamples x seqlen)) after {pool.documents} documents, "
                f"{pool.characters} characters: the windows come from that first part of the source."]
    if not streamed_hub or pool.found >= limits.enough:
        return []
    where = "the scan cap" if pool.stopped == "scan cap" else "the end of the dataset"
    return [
        f"{spec}: reading stopped at {where} ({pool.documents} documents, {pool.characters} characters) with "
        f"{pool.found} of the {_wanted(limits, floor)} wanted ("
        + (f"{READ_TOKENS_PER_SAMPLED_TOKEN} x nsamples x seqlen); windows will overlap more." if floor is None
           else f"{HUB_ELIGIBLE_PER_SAMPLE} x nsamples); windows will repeat documents more often.")
    ]


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
    except pickle.UnpicklingError as exc:
        raise SourceError(
            f"'{path.name}' holds pickled Python objects besides tensors; they are never loaded, because "
            f"unpickling can run arbitrary code. Save the ids as a plain tensor (torch.save(ids, path)) or as .npy."
        ) from exc
    except Exception as exc:
        raise SourceError(f"Could not read token tensor '{path.name}': {str(exc).splitlines()[0]}") from exc
    if ids.dim() != 2 or ids.numel() == 0:
        raise SourceError(f"'{path.name}' must hold a non-empty [nsamples, seqlen] tensor, got shape {tuple(ids.shape)}.")
    if ids.is_floating_point() or ids.is_complex():
        raise SourceError(f"'{path.name}' holds {ids.dtype} values; token ids must be integers.")
    ids = ids.to(torch.long)
    if int(ids.min()) < 0 or (vocab_size is not None and int(ids.max()) >= vocab_size):
        raise SourceError(f"'{path.name}' has token ids outside the tokenizer's vocabulary [0, {vocab_size}).")
    return ids
