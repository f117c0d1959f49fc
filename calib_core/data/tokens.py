"""Tokenizing text of any size in bounded memory, and the bounded pool calibration windows are drawn from.

A fast tokenizer holds about 250 bytes per input character while it works (a 200 MB text would need
~50 GB). Long text is therefore fed to it in pieces of about PIECE_CHARACTERS, cut only before a space
that follows a non-space character: no pre-token of the GPT-2 / Llama-3 byte-level regexes (or of a
word-level tokenizer) contains a non-space followed by a space, so the ids equal those of the whole
text tokenized at once (the tests check this on every builtin corpus with small pieces). Tokenizers
that add a prefix to every call (SentencePiece's dummy "▁") differ by a token at each cut, once per
million characters; a text with no such cut in 2 x PIECE_CHARACTERS is cut there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

PIECE_CHARACTERS = 1_000_000
_BATCH_TEXTS = 256
_SAFE_CUT = re.compile(r"(?<=\S) ")


def encode(tokenizer, texts: list[str], special_tokens: bool = False) -> list[list[int]]:
    """Token ids of short texts, in one tokenizer call. Long documents are fine here: we cut windows
    ourselves, so the max-length warning is silenced."""
    return tokenizer(texts, add_special_tokens=special_tokens, verbose=False)["input_ids"]


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's default special tokens put before and after a text: ([BOS], []) for Llama
    tokenizers, ([], []) for GPT-2/Qwen."""
    plain = encode(tokenizer, ["a"])[0]
    full = encode(tokenizer, ["a"], special_tokens=True)[0]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def _cut_at(text: str, size: int) -> int:
    match = _SAFE_CUT.search(text, size)
    if match is None or match.start() > 2 * size:
        return min(len(text), 2 * size)
    return match.start()


def _piece_size(max_tokens: int | None, count: int) -> int:
    """Characters per tokenizer call: PIECE_CHARACTERS, fewer when few tokens are still wanted (a token
    is rarely shorter than a character), so a bounded read stops close to its budget."""
    if max_tokens is None:
        return PIECE_CHARACTERS
    return min(PIECE_CHARACTERS, max(max_tokens - count, 2048))


@dataclass
class Encoded:
    ids: np.ndarray  # int32
    characters: int  # characters read
    complete: bool  # False when reading stopped at max_tokens


def encode_stream(tokenizer, pieces: Iterable[str], special_tokens: bool = False,
                  max_tokens: int | None = None) -> Encoded:
    """The ids of the concatenation of `pieces`, as if tokenized whole, reading pieces only until
    `max_tokens` ids are there (then cut to exactly that many)."""
    prefix, suffix = special_affixes(tokenizer) if special_tokens else ([], [])
    parts = [np.asarray(prefix, dtype=np.int32)]
    count, characters = len(prefix), 0
    buffer: list[str] = []
    buffered = 0

    def flush(text: str) -> None:
        nonlocal count
        ids = np.asarray(encode(tokenizer, [text])[0], dtype=np.int32)
        parts.append(ids)
        count += len(ids)

    for piece in pieces:
        characters += len(piece)
        buffer.append(piece)
        buffered += len(piece)
        while buffered > 2 * (size := _piece_size(max_tokens, count)):
            text = "".join(buffer)
            cut = _cut_at(text, size)
            flush(text[:cut])
            buffer, buffered = [text[cut:]], len(text) - cut
            if max_tokens is not None and count >= max_tokens:
                return Encoded(np.concatenate(parts)[:max_tokens], characters, False)
    if buffered:
        flush("".join(buffer))
    parts.append(np.asarray(suffix, dtype=np.int32))
    ids = np.concatenate(parts)
    if max_tokens is not None and len(ids) > max_tokens:
        return Encoded(ids[:max_tokens], characters, False)
    return Encoded(ids, characters, True)


def first_tokens(tokenizer, text: str, count: int, special_tokens: bool = False) -> list[int]:
    """The first `count` ids of a text of any length, tokenizing no more of it than that needs (the
    same ids as tokenizing the whole text and cutting)."""
    return encode_stream(tokenizer, [text], special_tokens, max_tokens=count).ids.tolist()


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text without special tokens, in bounded memory (for length histograms)."""
    return [len(encode_stream(tokenizer, [t]).ids) for t in texts]


@dataclass
class Pool:
    """What was read from a text source for drawing windows, and why reading stopped."""

    token_docs: list  # int32 arrays: the eligible documents (document modes) or the one joined stream (concat)
    joined: bool = False  # concat: token_docs holds the one stream
    documents: int = 0  # documents read
    characters: int = 0
    tokens: int = 0  # tokens read
    lengths: list[int] = field(default_factory=list)  # tokens of each document read (document modes)
    stopped: str = "end of source"  # end of source | enough | read budget | scan cap

    @property
    def found(self) -> int:
        """Eligible documents, or tokens of the joined stream."""
        return len(self.token_docs[0]) if self.joined else len(self.token_docs)


@dataclass(frozen=True)
class ReadLimits:
    """When to stop reading: `max_tokens` read in all; `enough` eligible documents (document modes) or
    stream tokens (concat); scan caps on documents and characters."""

    max_tokens: int | None = None
    enough: int | None = None
    max_documents: int | None = None
    max_characters: int | None = None


def read_pool(texts: Iterable, tokenizer, floor: int | None, separator: str, special_tokens: bool,
              limits: ReadLimits, keep_empty: bool = False) -> Pool:
    """Tokenize `texts` (strings, or iterables of string pieces for documents read lazily) into a pool:
    documents with more than `floor` tokens (document modes), or one stream of all texts joined with
    `separator` (floor None: concat mode; `special_tokens` then frame the whole stream). Empty and
    whitespace-only texts are skipped unless `keep_empty` (concat only)."""
    if floor is None:
        return _read_joined(texts, tokenizer, separator, special_tokens, limits, keep_empty)
    pool = Pool([])
    for text, ids, characters in _encoded_documents(texts, tokenizer, special_tokens, limits, pool):
        pool.documents += 1
        pool.characters += characters
        pool.tokens += len(ids)
        pool.lengths.append(len(ids))
        if len(ids) > floor:  # only eligible documents are kept, as compact arrays
            pool.token_docs.append(np.asarray(ids, dtype=np.int32))
        pool.stopped = _stop_reason(pool, limits, len(pool.token_docs))
        if pool.stopped != "end of source":
            break
    return pool


def _stop_reason(pool: Pool, limits: ReadLimits, found: int) -> str:
    if limits.enough is not None and found >= limits.enough:
        return "enough"
    if limits.max_tokens is not None and pool.tokens >= limits.max_tokens:
        return "read budget"
    if (limits.max_documents is not None and pool.documents >= limits.max_documents) or (
            limits.max_characters is not None and pool.characters >= limits.max_characters):
        return "scan cap"
    return "end of source"


def _encoded_documents(texts: Iterable, tokenizer, special_tokens: bool, limits: ReadLimits,
                       pool: Pool) -> Iterator[tuple[object, list, int]]:
    """(text, ids, characters) per non-empty document, short texts tokenized in batches and long or lazy
    ones in pieces, cut at the remaining token budget."""
    batch: list[str] = []

    def run_batch():
        if not batch:
            return
        yield from ((t, ids, len(t)) for t, ids in zip(batch, encode(tokenizer, batch, special_tokens)))
        batch.clear()

    for text in texts:
        if isinstance(text, str) and len(text) <= PIECE_CHARACTERS:
            if text.strip():
                batch.append(text)
                if len(batch) >= _BATCH_TEXTS or sum(map(len, batch)) > PIECE_CHARACTERS:
                    yield from run_batch()
            continue
        yield from run_batch()
        budget = None if limits.max_tokens is None else max(limits.max_tokens - pool.tokens, 1)
        encoded = encode_stream(tokenizer, [text] if isinstance(text, str) else text, special_tokens, budget)
        yield text, encoded.ids, encoded.characters
    yield from run_batch()


def _read_joined(texts: Iterable, tokenizer, separator: str, special_tokens: bool, limits: ReadLimits,
                 keep_empty: bool) -> Pool:
    pool = Pool([], joined=True)
    budget = min((x for x in (limits.max_tokens, limits.enough) if x is not None), default=None)

    def pieces():
        for text in texts:
            for piece in [text] if keep_empty else _non_empty(text):
                if pool.documents:
                    yield separator
                pool.documents += 1
                yield from ([piece] if isinstance(piece, str) else piece)
                if (limits.max_documents is not None and pool.documents >= limits.max_documents) or (
                        limits.max_characters is not None and pool.characters >= limits.max_characters):
                    pool.stopped = "scan cap"
                    return

    def counted():
        for piece in pieces():
            pool.characters += len(piece)
            yield piece

    encoded = encode_stream(tokenizer, counted(), special_tokens, budget)
    pool.token_docs = [encoded.ids]
    pool.tokens = len(encoded.ids)
    if not encoded.complete:
        pool.stopped = "enough" if budget == limits.enough else "read budget"
    return pool


def _non_empty(text) -> list:
    """[text] unless it is an empty or whitespace-only string (lazy texts are kept: they are long)."""
    if isinstance(text, str):
        return [text] if text.strip() else []
    return [text]
