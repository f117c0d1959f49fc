"""Calibration data: text sources and files, bounded reading and tokenization, seeded sampling,
saved sets and self-generated text. `build_calibration` is the entry point."""

from .documents import load_documents, source_texts
from .sources import BUILTIN_SOURCES, MODES, CalibrationSet, build_calibration

__all__ = ["BUILTIN_SOURCES", "MODES", "CalibrationSet", "build_calibration", "load_documents", "source_texts"]
