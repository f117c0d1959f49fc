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

from ..data.documents import parse_source, source_texts
from ..data.sources import READ_TOKENS_FLOOR
from ..data.tokens import ReadLimits, read_pool
from ..devices import resolve_device
from ..errors import ConfigError, SourceError

# How perplexity is measured, each with the help every front end shows.
PROTOCOLS = {
    "heldout": "the eval texts without empty rows, no special tokens",
    "wikitext2": "Wanda/SparseGPT's WikiText-2 stream (every row incl. empty ones, with the tokenizer's special "
                 "tokens), e.g. on hf:wikitext:wikitext-2-raw-v1:test (needs the hub)",
}


@dataclass
class PerplexityResult:
    source: str
    ppl: float
    seqlen: int
    windows: int
    tokens: int  # predicted tokens = windows * (seqlen - 1)
    protocol: str
    seconds: float
    placement: str = "whole model"  # or "block by block" (a model that did not fit, or a streamed one)

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
    `stream`, which the result still names with `protocol`), computed on `device`. The whole model
    visits the device when it fits in the device's free memory; otherwise each block visits it in
    turn (the result's `placement` says which), as a streamed run's evaluation does."""
    from ..devices import fits_whole

    start = time.perf_counter()
    ids = evaluation_windows(spec, tokenizer, seqlen, max_windows, protocol, stream)
    target = resolve_device(device)
    logits_bytes = batch_size * seqlen * model.config.vocab_size * 4 * 2
    if not fits_whole(model, target, logits_bytes):
        total_nll = _blockwise_nll(ResidentBlocks(model), ids, target)
        return _result(spec, total_nll, ids, protocol, start, "block by block")
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


def _result(spec: str, total_nll: float, ids: torch.Tensor, protocol: str, start: float,
            placement: str = "whole model") -> PerplexityResult:
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
                            time.perf_counter() - start, placement)


LOGIT_CHUNK = 128  # positions whose logits a streamed perplexity holds at once


def streamed_perplexity(streamed, tokenizer, spec: str, seqlen: int = 512, max_windows: int | None = None,
                        device: str = "auto", protocol: str = "heldout") -> PerplexityResult:
    """The same perplexity with the blocks read from disk one at a time (prune/streaming.StreamedModel)."""
    start = time.perf_counter()
    ids = evaluation_windows(spec, tokenizer, seqlen, max_windows, protocol)
    return _result(spec, _blockwise_nll(streamed, ids, resolve_device(device)), ids, protocol, start, "block by block")


class ResidentBlocks:
    """An in-memory model seen as StreamedModel sees a model on disk: each block visits the compute
    device for its turn and goes back, then the head (final norm and output embedding) does; the
    embedding runs where the model lives."""

    def __init__(self, model):
        from ..models import decoder_blocks, final_norm

        self.model, self.blocks, self.norm = model, decoder_blocks(model), final_norm(model)
        self.home = next(model.parameters()).device
        self._head_on: torch.device | None = None

    def embeddings(self):
        import contextlib

        return contextlib.nullcontext()

    def load_block(self, index: int, device: torch.device) -> None:
        self.blocks[index].to(device)

    def release_block(self, index: int) -> None:
        self.blocks[index].to(self.home)

    def _head_modules(self):
        return [self.norm, self.model.get_output_embeddings()]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._head_on != hidden.device:
            for module in self._head_modules():
                module.to(hidden.device)
            self._head_on = hidden.device
        logits = self.model.get_output_embeddings()(self.norm(hidden))
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def release_head(self) -> None:
        for module in self._head_modules():
            module.to(self.home)
        self._head_on = None


def _blockwise_nll(source, ids: torch.Tensor, target: torch.device) -> float:
    """Total NLL of `ids` with one block on `target` at a time: every window through block i, then
    block i + 1, then the head, LOGIT_CHUNK positions at a time (no [seqlen, vocab] logits). `source`
    is a StreamedModel or ResidentBlocks."""
    from ..prune.capture import block_forward, capture_block_inputs, walk_blocks

    total_nll = 0.0
    with torch.inference_mode():
        with source.embeddings():
            inputs = capture_block_inputs(source.model, ids, 1, target)
        for index, block, outputs in walk_blocks(source.blocks, inputs, lambda i, block: source.load_block(i, target),
                                                 lambda i, block: source.release_block(i)):
            block_forward(block, inputs, index, outputs)
        seqlen = ids.shape[1]
        try:
            for row in range(ids.shape[0]):
                for begin in range(0, seqlen - 1, LOGIT_CHUNK):
                    end = min(begin + LOGIT_CHUNK, seqlen - 1)
                    logits = source.logits(inputs.hidden[row : row + 1, begin:end])[0].float()
                    total_nll += float(F.cross_entropy(logits, ids[row, begin + 1 : end + 1].to(logits.device),
                                                       reduction="sum"))
        finally:
            source.release_head()
    return total_nll
