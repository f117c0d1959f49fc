"""The items of the 4-way cloze task (metrics/cloze.py, metrics/zeroshot.py): a passage's first tokens and 4
candidate continuations, the true one among 3 taken from other documents, from the held-out part of a source.
Kept in the data layer beside the other readers of the builtin corpora."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import SourceError
from .documents import load_documents

_PART_NAMES = {"eval": "held-out", "calib": "calibration"}


@dataclass(frozen=True)
class ClozeItem:
    context: list[int]
    candidates: list[list[int]]
    answer: int  # index of the true continuation


def cloze_items(spec: str, tokenizer, items: int = 100, context_tokens: int = 64, continuation_tokens: int = 16,
                seed: int = 0, part: str = "eval") -> list[ClozeItem]:
    """Seeded items from one part of `spec` (one passage per document; the accuracy proxy: the held-out part)."""
    need = context_tokens + continuation_tokens
    docs = [ids for ids in (tokenizer(d, add_special_tokens=False, verbose=False)["input_ids"]
                            for d in load_documents(spec, part=part)) if len(ids) >= need]
    if len(docs) < 4:
        raise SourceError(f"'{spec}' has {len(docs)} {_PART_NAMES.get(part, part)} documents of >= {need} tokens; a cloze item needs 4.")
    rng = random.Random(seed)
    out = []
    for _ in range(items):
        picked = rng.sample(range(len(docs)), 4)
        spans = []
        for d in picked:
            start = rng.randrange(0, len(docs[d]) - need + 1)
            spans.append(docs[d][start : start + need])
        answer = rng.randrange(4)
        true_span, others = spans[0], spans[1:]
        candidates = [span[context_tokens:] for span in others]
        candidates.insert(answer, true_span[context_tokens:])
        out.append(ClozeItem(true_span[:context_tokens], candidates, answer))
    return out
