"""Local text files -> documents, read as a stream where the format allows it.

  .txt      one document, read in pieces when it is consumed (any size)
  .jsonl    one record per line, streamed; errors name the line
  .json     a list of strings, a list of objects with a text field, {"data": [...]}, or one string
  .csv      a table with a text column
  .parquet  a table with a text column
.json, .csv and .parquet are parsed whole, so files above WHOLE_FILE_MAX_BYTES are refused with
advice to convert them to a streamed format.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError

FILE_TYPES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
TEXT_COLUMNS = ("text", "content", "document", "body", "article", "sentence")
WHOLE_FILE_MAX_BYTES = 64 * 1024**2
READ_CHUNK_BYTES = 1 << 20
_DETECT_ROWS = 50  # rows a JSONL file's text column is detected from


BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")
HOW_TEXTS_SPLIT = ("Split into texts at blank lines (a line holding only spaces or tabs counts as blank; Windows line "
                   "ends are read as line ends); each part, stripped, is one text.")


def split_at_blank_lines(text: str) -> list[str]:
    """The texts of pasted text or an uploaded .txt file (HOW_TEXTS_SPLIT), in order."""
    parts = BLANK_LINES.split(text.replace("\r\n", "\n").replace("\r", "\n"))
    return [part.strip() for part in parts if part.strip()]


class LazyText:
    """One document that is read from disk, in decoded pieces, only when iterated."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        offset = 0
        with open(self.path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                if offset == 0 and b"\x00" in chunk[:65536]:
                    raise SourceError(f"'{self.path.name}' looks binary (NUL bytes), not .txt text.")
                try:
                    yield decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise _not_utf8(self.path, offset + exc.start) from exc
                offset += len(chunk)
        try:
            yield decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.path, offset + exc.start) from exc

    def read(self, max_characters: int) -> str:
        pieces, size = [], 0
        for piece in self:
            size += len(piece)
            if size > max_characters:
                raise too_large_to_list(self.path.name, max_characters)
            pieces.append(piece)
        return "".join(pieces)


def _not_utf8(path: Path, byte: int) -> SourceError:
    return SourceError(f"'{path.name}' is not UTF-8 text (byte {byte}): re-save it as UTF-8.")


def too_large_to_list(name: str, max_characters: int) -> SourceError:
    return SourceError(
        f"'{name}' holds more than {max_characters:,} characters, more than a whole-source view (preview, "
        f"saving as a set) holds in memory. Calibration and perplexity read it as a stream: use it as file:PATH "
        f"there, or split it.")


def detect_text_column(columns: dict[str, list], where: str) -> str:
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    textual = {k: v for k, v in columns.items() if v and all(isinstance(x, str) for x in v[:50])}
    if not textual:
        raise SourceError(
            f"{where} has no text column (columns: {', '.join(map(str, columns)) or 'none'}). Name "
            f"one with a string column, or pass its name as the text column."
        )
    return max(textual, key=lambda k: sum(len(x) for x in textual[k][:50]))


def column_texts(columns: dict[str, list], where: str, text_column: str | None) -> list[str]:
    if text_column is not None:
        if text_column not in columns:
            raise SourceError(f"{where} has no column '{text_column}' (columns: {', '.join(map(str, columns))}).")
        column = text_column
    else:
        column = detect_text_column(columns, where)
    values = [v for v in columns[column] if isinstance(v, str)]
    if not values:
        raise SourceError(f"{where}: column '{column}' holds no strings.")
    return values


def check_text_file(path: Path) -> str:
    """A file that can be read as texts (it exists, is a file, has a known type): its suffix."""
    if not path.exists():
        raise SourceError(f"File '{path}' does not exist.")
    if path.is_dir():
        raise SourceError(f"'{path}' is a folder; give a file.")
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise SourceError(f"'{path.name}': unsupported file type '{suffix}'. Use one of {', '.join(FILE_TYPES)}.")
    return suffix


def iter_file_documents(path: Path, text_column: str | None = None) -> Iterator[str | LazyText]:
    """Documents of a local file, checked for every way the file can be wrong; a .txt file gives one
    LazyText and a .jsonl file is read line by line, so neither is held in memory whole."""
    suffix = check_text_file(path)
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"'{path.name}' is empty.")
    if suffix == ".txt":
        if size <= READ_CHUNK_BYTES and not "".join(LazyText(path)).strip():
            raise SourceError(f"'{path.name}' contains only whitespace.")
        yield LazyText(path)
        return
    if suffix == ".jsonl":
        yield from _jsonl_documents(path, text_column)
        return
    if size > WHOLE_FILE_MAX_BYTES:
        raise SourceError(
            f"'{path.name}' is {size / 1024**2:.0f} MB; {suffix} files are parsed whole, up to "
            f"{WHOLE_FILE_MAX_BYTES // 1024**2} MB. Split it, or convert it to .jsonl or .txt, which are read as a "
            f"stream.")
    yield from _whole_file_documents(path, suffix, text_column)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and b"\x00" in raw[:65536]:
                raise SourceError(f"'{path.name}' looks binary (NUL bytes), not .jsonl text.")
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError(f"'{path.name}' line {number} is not UTF-8 text (byte {exc.start} of the line): "
                                  f"re-save it as UTF-8.") from exc


def _jsonl_documents(path: Path, text_column: str | None) -> Iterator[str]:
    """Strings, or each object's text field (chosen from the first rows like a table's column)."""
    column, head, kind = None, [], None
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"'{path.name}' line {number} is not valid JSON: {exc.msg} (column {exc.colno}).") from exc
        row_kind = "text" if isinstance(row, str) else "object" if isinstance(row, dict) else None
        if row_kind is None or (kind and row_kind != kind):
            raise SourceError(f"'{path.name}' line {number}: expected every line to be a string or every line an "
                              f"object with a text field, got {type(row).__name__}.")
        kind = row_kind
        if kind == "text":
            yield row
        elif column is not None:
            yield from _row_texts([row], column)
        else:
            head.append(row)
            if len(head) == _DETECT_ROWS:
                column = yield from _head_texts(head, path.name, text_column)
    if head and column is None:
        yield from _head_texts(head, path.name, text_column)
    elif kind is None:
        raise SourceError(f"'{path.name}' contains only whitespace.")


def _head_texts(rows: list[dict], where: str, text_column: str | None):
    """Yield the texts of the first rows; return the text column they name (or the one detected)."""
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    yield from column_texts(columns, where, text_column)
    return text_column or detect_text_column(columns, where)


def _row_texts(rows: list[dict], column: str) -> Iterator[str]:
    for row in rows:
        value = row.get(column)
        if isinstance(value, str):
            yield value


def _whole_file_documents(path: Path, suffix: str, text_column: str | None) -> list[str]:
    if suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise SourceError(f"'{path.name}' is not a readable parquet file: {exc}") from exc
        return column_texts({c: frame[c].tolist() for c in frame.columns}, path.name, text_column)
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise SourceError(f"'{path.name}' looks binary (NUL bytes), not {suffix} text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc.start) from exc
    if not text.strip():
        raise SourceError(f"'{path.name}' contains only whitespace.")
    if suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(io.StringIO(text))
        except Exception as exc:
            raise SourceError(f"'{path.name}' is not valid CSV: {exc}") from exc
        return column_texts({c: frame[c].tolist() for c in frame.columns}, path.name, text_column)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"'{path.name}' is not valid JSON: {exc}") from exc
    if isinstance(rows, str):  # one text
        return [rows]
    if isinstance(rows, dict):  # {"data": [...]} wraps the records; any other object is one record
        lists = [v for v in rows.values() if isinstance(v, list)]
        rows = lists[0] if len(lists) == 1 and len(rows) == 1 else [rows]
    if not isinstance(rows, list):
        raise SourceError(f"'{path.name}' holds a single JSON {type(rows).__name__} ({str(rows)[:40]}), not texts: "
                          f"expected a list of strings, a list of objects with a text field, or one string.")
    if rows and all(isinstance(r, str) for r in rows):
        return rows
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise SourceError(f"'{path.name}': expected a list of strings or of objects with a text field.")
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return column_texts(columns, path.name, text_column)
