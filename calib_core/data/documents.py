"""Source specs -> their texts: a spec parsed and checked without reading it, its texts read lazily, or listed
whole (bounded), and uploads read as the app shows them. data/sources.py draws calibration windows from them.

A source is a spec string:
  builtin:wiki|news|books|code      offline corpora, split into a calibration pool and an eval part
  hf:NAME[:CONFIG[:SPLIT]]          a hub dataset, streamed as far as the sampling needs
  file:PATH                         .txt (one document), .jsonl, .json, .csv, .parquet (a text column)
  set:NAME                          a saved calibration set
  tokens:PATH                       a .pt/.npy [nsamples, seqlen] tensor of token ids, used as is
  mix:SOURCE=W,SOURCE=W[,random=F]  several sources by weight, optionally random-token rows (see mix.py)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .. import assets, hub
from ..errors import SourceError
from . import sets
from .mix import parse_mix
from .text_files import (
    LazyText,
    check_text_file,
    detect_text_column,
    iter_file_documents,
    split_at_blank_lines,
    too_large_to_list,
)

# Whole-source views (load_documents: previews, saving a set, prefixes) hold every text in memory.
LIST_MAX_CHARACTERS = 64_000_000


def parse_source(spec: str) -> tuple[str, str]:
    kind, sep, rest = (spec or "").partition(":")
    if not sep or kind not in ("builtin", "hf", "file", "set", "tokens", "mix") or not rest:
        raise SourceError(
            f"Bad source '{spec}'. Use builtin:wiki|news|books|code, hf:NAME[:CONFIG[:SPLIT]], "
            f"file:PATH, set:NAME, tokens:PATH or mix:SOURCE=WEIGHT,SOURCE=WEIGHT."
        )
    if kind == "mix":
        for component, _weight in parse_mix(rest).sources:
            parse_source(component)  # a bad component is named now, before anything is read
    return kind, rest


def check_source(spec: str) -> str:
    """`spec` checked without reading it (cheap enough to run as a user types): the syntax, a builtin
    corpus or saved set that exists, a file or token tensor that is a file, each component of a mix. A hub
    dataset is checked for its syntax only (reading it needs the network). Returns the spec; a SourceError
    names what is wrong."""
    kind, rest = parse_source(spec)
    if kind == "builtin" and rest not in assets.BUILTIN_CORPORA:
        raise SourceError(f"No builtin corpus '{rest}': the builtin corpora are "
                          f"{', '.join(assets.BUILTIN_CORPORA)}.")
    if kind == "set" and rest not in sets.list_sets():
        saved = sets.list_sets()
        raise SourceError(f"No saved set '{rest}' " + (f"(saved sets: {', '.join(saved)})." if saved else
                                                       "(no set is saved yet: build one on the Calibration data page)."))
    if kind == "file":
        check_text_file(Path(rest).expanduser())
    if kind == "tokens" and not Path(rest).expanduser().is_file():
        raise SourceError(f"Token file '{rest}' does not exist (a token tensor: .pt or .npy).")
    if kind == "mix":
        for component, _weight in parse_mix(rest).sources:
            check_source(component)
    return spec


def source_texts(spec: str, part: str = "calib", text_column: str | None = None) -> Iterator:
    """The texts of a source in order, read lazily: strings, or a LazyText for a .txt file (see
    text_files). `part` picks a builtin corpus' calibration pool or held-out eval part; other sources
    ignore it (choose the split in the spec)."""
    kind, rest = parse_source(spec)
    if kind == "builtin":
        if part not in ("calib", "eval", "all"):
            raise SourceError(f"part must be calib, eval or all, got '{part}'.")
        return (d["text"] for d in assets.builtin_documents(rest) if part == "all" or d["split"] == part)
    if kind == "hf":
        return _hf_rows(rest, text_column)
    if kind == "file":
        return iter_file_documents(Path(rest).expanduser(), text_column)
    if kind == "set":
        return iter(sets.set_texts(rest))
    if kind == "mix":
        raise SourceError(f"'{spec}' is drawn window by window from its sources by weight; it has no text of its own "
                          f"(preview or score its sources one by one).")
    raise SourceError(f"'{spec}' is a token tensor, not text: it is used as calibration samples as is.")


def load_documents(spec: str, part: str = "calib", limit: int | None = None, text_column: str | None = None,
                   keep_empty: bool = False, max_characters: int = LIST_MAX_CHARACTERS) -> list[str]:
    """Documents of a text source as a list (see source_texts), at most `limit` of them. Empty and
    whitespace-only rows are dropped unless `keep_empty` (the WikiText-2 perplexity protocol joins them
    too). A source with more than `max_characters` is refused: sampling reads it as a stream instead."""
    docs, total = [], 0
    for text in source_texts(spec, part, text_column):
        if isinstance(text, LazyText):
            text = text.read(max_characters - total)
        if not keep_empty and not (text and text.strip()):
            continue
        total += len(text)
        if total > max_characters:
            raise too_large_to_list(spec, max_characters)
        docs.append(text)
        if limit and len(docs) >= limit:
            break
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
        column = column or detect_text_column({k: [v] for k, v in row.items()}, f"hf:{rest}")
        yield str(row[column])


def read_text_file(path: Path, text_column: str | None = None, max_characters: int = LIST_MAX_CHARACTERS) -> list[str]:
    """All documents of a local file (see text_files), refused above `max_characters`."""
    return load_documents(f"file:{path}", text_column=text_column, max_characters=max_characters)


def read_upload(path: Path, text_column: str | None = None) -> list[str]:
    """The texts of an uploaded file as the app shows and saves them: a .txt split at blank lines as pasted
    text is (text_files.HOW_TEXTS_SPLIT), whatever its size; other types one text per row or line. (A `file:`
    source reads a .txt as one document, which a run samples windows from.)"""
    texts = read_text_file(path, text_column)
    if path.suffix.lower() == ".txt":
        texts = [part for text in texts for part in split_at_blank_lines(text)]
    return texts
