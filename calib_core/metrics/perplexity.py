"""Perplexity with an explicit, recorded protocol (WikiText-2 style, as in Wanda and SparseGPT).

Both protocols join the evaluation texts with "\\n\\n", tokenize once, cut non-overlapping windows
of `seqlen` and report exp(total NLL / total predicted tokens), where each window predicts its
seqlen - 1 next tokens (every window predicts as many tokens, so this equals Wanda's exp of the mean
per-window loss). They differ in the token stream:
  heldout    (default) the source's eval part without empty rows, no special tokens
  wikitext2  as Wanda/SparseGPT evaluate WikiText-2: every row of the split, empty ones included,
             with the tokenizer's default special tokens (one BOS first for Llama tokenizers); use it
             with hf:wikitext:wikitext-2-raw-v1:test to compare with published numbers
The window length changes the number: always record it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sources import READ_TOKENS_FLOOR, parse_source, source_texts
from ..data.tokens import ReadLimits, read_pool
from ..errors import ConfigError, SourceError
from ..models import resolve_device

PROTOCOLS = ("heldout", "wikitext2")


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


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Perplexity protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'.")


def eval_token_stream(spec: str, tokenizer, part: str = "eval", protocol: str = "heldout",
                      max_tokens: int | None = None) -> torch.Tensor:
    """The evaluation part of a source as one token stream (builtin: the held-out documents), read only
    up to `max_tokens` (a file or hub source: at most READ_TOKENS_FLOOR without it)."""
    check_protocol(protocol)
    wikitext2 = protocol == "wikitext2"
    if max_tokens is None and parse_source(spec)[0] != "builtin":
        max_tokens = READ_TOKENS_FLOOR
    pool = read_pool(source_texts(spec, part), tokenizer, None, "\n\n", wikitext2, ReadLimits(max_tokens=max_tokens),
                     keep_empty=wikitext2)
    if not pool.documents:
        raise SourceError(f"Source '{spec}' has no non-empty text.")
    return torch.from_numpy(pool.token_docs[0].astype(np.int64))


def evaluation_windows(spec: str, tokenizer, seqlen: int, max_windows: int | None, protocol: str,
                       stream: torch.Tensor | None = None) -> torch.Tensor:
    """[windows, seqlen] token ids: the non-overlapping windows a perplexity is measured on."""
    check_protocol(protocol)
    if stream is None:
        stream = eval_token_stream(spec, tokenizer, protocol=protocol,
                                   max_tokens=max_windows * seqlen if max_windows else None)
    windows = stream.numel() // seqlen
    if max_windows:
        windows = min(windows, max_windows)
    if windows < 1:
        raise SourceError(f"'{spec}' has {stream.numel()} evaluation tokens, fewer than one window of {seqlen}.")
    return stream[: windows * seqlen].view(windows, seqlen)


def perplexity(
    model,
    tokenizer,
    spec: str,
    seqlen: int = 512,
    max_windows: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    stream: torch.Tensor | None = None,
    protocol: str = "heldout",
) -> PerplexityResult:
    """Perplexity of `model` on the evaluation part of `spec` under `protocol` (or a given token
    `stream`, which the result still names with `protocol`)."""
    start = time.perf_counter()
    ids = evaluation_windows(spec, tokenizer, seqlen, max_windows, protocol, stream)
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
    return _result(spec, total_nll, ids, protocol, start)


def _result(spec: str, total_nll: float, ids: torch.Tensor, protocol: str, start: float) -> PerplexityResult:
    windows, seqlen = ids.shape
    predicted = windows * (seqlen - 1)
    stream_made = (
        "every row of the split incl. empty rows, joined with '\\n\\n', tokenizer's default special tokens"
        if protocol == "wikitext2" else "eval part without empty rows, joined with '\\n\\n', no special tokens"
    )
    described = (
        f"{protocol}: {spec}, {stream_made}, {windows} non-overlapping windows of {seqlen} tokens, "
        f"ppl = exp(sum NLL / {predicted} predicted tokens)"
    )
    return PerplexityResult(spec, math.exp(total_nll / predicted), seqlen, windows, predicted, described,
                            time.perf_counter() - start)


LOGIT_CHUNK = 128  # positions whose logits a streamed perplexity holds at once


def streamed_perplexity(streamed, tokenizer, spec: str, seqlen: int = 512, max_windows: int | None = None,
                        device: str = "auto", protocol: str = "heldout") -> PerplexityResult:
    """The same perplexity with the blocks read from disk one at a time (prune/streaming.StreamedModel):
    every window through block i, then block i + 1, then the head one window at a time."""
    from ..prune.capture import block_forward, capture_block_inputs

    start = time.perf_counter()
    ids = evaluation_windows(spec, tokenizer, seqlen, max_windows, protocol)
    target = resolve_device(device)
    total_nll = 0.0
    with torch.inference_mode():
        with streamed.embeddings():
            inputs = capture_block_inputs(streamed.model, ids, 1, target)
        outputs = torch.empty_like(inputs.hidden)
        for index, block in enumerate(streamed.blocks):
            streamed.load_block(index, target)
            try:
                block_forward(block, inputs, index, outputs)
            finally:
                streamed.release_block(index)
            inputs.hidden, outputs = outputs, inputs.hidden
        seqlen = ids.shape[1]
        try:
            for row in range(ids.shape[0]):  # LOGIT_CHUNK positions at a time: no [seqlen, vocab] logits
                for begin in range(0, seqlen - 1, LOGIT_CHUNK):
                    end = min(begin + LOGIT_CHUNK, seqlen - 1)
                    logits = streamed.logits(inputs.hidden[row : row + 1, begin:end])[0].float()
                    total_nll += float(F.cross_entropy(logits, ids[row, begin + 1 : end + 1].to(logits.device),
                                                       reduction="sum"))
        finally:
            streamed.release_head()
    return _result(spec, total_nll, ids, protocol, start)
