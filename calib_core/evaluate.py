"""Perplexity with an explicit, recorded protocol (paper-notes section 7).

WikiText-2 style: join the evaluation texts with "\\n\\n", tokenize once (no special tokens), cut
non-overlapping windows of `seqlen`, and report exp(total NLL / total predicted tokens), where each
window predicts its seqlen - 1 next tokens. The window length changes the number: always record it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .data import load_documents
from .errors import SourceError
from .models import resolve_device


@dataclass
class PerplexityResult:
    source: str
    ppl: float
    seqlen: int
    windows: int
    tokens: int  # predicted tokens = windows * (seqlen - 1)
    protocol: str
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def eval_token_stream(spec: str, tokenizer, part: str = "eval") -> torch.Tensor:
    """The evaluation part of a source as one token stream (builtin: the held-out documents)."""
    docs = load_documents(spec, part=part)
    ids = tokenizer("\n\n".join(docs), add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def perplexity(
    model,
    tokenizer,
    spec: str,
    seqlen: int = 512,
    max_windows: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    stream: torch.Tensor | None = None,
) -> PerplexityResult:
    """Perplexity of `model` on the evaluation part of `spec` (or a given token `stream`)."""
    start = time.perf_counter()
    if stream is None:
        stream = eval_token_stream(spec, tokenizer)
    windows = stream.numel() // seqlen
    if max_windows:
        windows = min(windows, max_windows)
    if windows < 1:
        raise SourceError(f"'{spec}' has {stream.numel()} evaluation tokens, fewer than one window of {seqlen}.")
    ids = stream[: windows * seqlen].view(windows, seqlen)
    target = resolve_device(device)
    home = next(model.parameters()).device
    if target != home:
        model.to(target)
    total_nll = 0.0
    try:
        with torch.inference_mode():
            for batch in ids.split(batch_size):
                logits = model(input_ids=batch.to(target), use_cache=False).logits
                targets = batch[:, 1:].to(target)
                for row in range(batch.shape[0]):  # one row at a time: no extra [B*L, vocab] copies
                    total_nll += float(F.cross_entropy(logits[row, :-1].float(), targets[row], reduction="sum"))
                del logits
    finally:
        if target != home:
            model.to(home)
    predicted = windows * (seqlen - 1)
    protocol = (
        f"eval part of {spec}, joined with '\\n\\n', {windows} non-overlapping windows of {seqlen} "
        f"tokens, ppl = exp(sum NLL / {predicted} predicted tokens)"
    )
    return PerplexityResult(spec, math.exp(total_nll / predicted), seqlen, windows, predicted, protocol,
                            time.perf_counter() - start)
