"""Self-generated calibration data: generate, then filter (Ji et al., ICLR 2025).

Take the first P tokens of source texts as prefixes, let the model continue them by sampling,
score every text (prefix included) with the same model, and drop the highest-perplexity fraction.
The result is an ordinary saved calibration set (`set:NAME`).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..errors import ConfigError, SourceError
from ..scoring import pad_id, perplexity_of, score_token_ids
from . import sets
from .documents import load_documents
from .tokens import first_tokens


@dataclass(frozen=True)
class GenerationConfig:
    source: str = "builtin:wiki"
    texts: int = 64
    prefix_tokens: int = 2  # incl. BOS where the tokenizer adds one
    max_new_tokens: int = 256  # CPU-friendly; the paper generates up to 2048 (GPU)
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.2
    batch_size: int = 8
    drop_fraction: float = 0.2  # drop the highest-perplexity fraction
    seed: int = 0

    def validate(self) -> None:
        if self.texts < 1 or self.prefix_tokens < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("texts, prefix_tokens, max_new_tokens and batch_size must be positive.")
        if not 0 <= self.drop_fraction < 1:
            raise ConfigError(f"drop_fraction must be in [0, 1), got {self.drop_fraction}.")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ConfigError("Need temperature > 0, 0 < top_p <= 1, top_k >= 0, repetition_penalty > 0.")


# Window lengths at which the metadata counts kept texts long enough for document-mode sampling.
LENGTH_MARKS = (128, 256, 512, 1024, 2048)


@dataclass
class GenerationProgress:
    """After each batch; and during a batch (about once a second) with `batch_tokens` set: how many new
    tokens the batch in progress has so far, of at most `max_new_tokens`."""

    texts_done: int
    texts_total: int
    tokens_per_second: float
    latest_text: str
    ppls: list[float] = field(default_factory=list)
    batch_tokens: int | None = None
    max_new_tokens: int = 0
    kind: str = "generation"


class _BatchWatch(StoppingCriteria):
    """Reports a batch's progress while `generate` runs, and stops it at once on cancel. It draws no
    random numbers, so the generated texts are those of a plain `generate` call."""

    def __init__(self, emit, cancel, prompt_width: int, progress: GenerationProgress, every_seconds: float = 1.0):
        self.emit, self.cancel, self.width, self.progress = emit, cancel, prompt_width, progress
        self.every, self.last = every_seconds, time.perf_counter()

    def __call__(self, input_ids, scores, **kwargs):
        if time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            self.emit(replace(self.progress, batch_tokens=input_ids.shape[1] - self.width))
        stop = self.cancel is not None and self.cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@dataclass
class GeneratedSet:
    records: list[dict]  # text, ppl, kept, prefix
    threshold: float | None
    metadata: dict
    cancelled: bool = False

    @property
    def kept_texts(self) -> list[str]:
        return [r["text"] for r in self.records if r["kept"]]


def prefixes(tokenizer, docs: list[str], count: int, prefix_tokens: int, seed: int) -> list[list[int]]:
    """The first P tokens (special tokens included) of `count` seeded-random documents."""
    rng = random.Random(seed)
    picked = rng.sample(docs, count) if len(docs) >= count else [rng.choice(docs) for _ in range(count)]
    out = []
    for doc in picked:
        ids = first_tokens(tokenizer, doc, prefix_tokens, special_tokens=True)
        if ids:
            out.append(ids)
    if not out:
        raise SourceError("No usable prefixes: the source texts tokenize to nothing.")
    return out


def filter_by_perplexity(ppls: list[float], drop_fraction: float) -> tuple[list[bool], float | None]:
    """Keep texts with ppl strictly below the (1 - drop) percentile (numpy's linear definition)."""
    if drop_fraction == 0 or not ppls:
        return [True] * len(ppls), None
    threshold = float(np.percentile(np.asarray(ppls, dtype=np.float64), 100 * (1 - drop_fraction)))
    return [p < threshold for p in ppls], threshold


def generate_set(model, tokenizer, config: GenerationConfig, on_event=None, cancel=None,
                 model_name: str = "") -> GeneratedSet:
    """Generate, score and filter. A cancel keeps (and scores) what was generated so far."""
    config.validate()
    emit = on_event or (lambda event: None)
    docs = load_documents(config.source, part="calib")
    prompts = prefixes(tokenizer, docs, config.texts, config.prefix_tokens, config.seed)
    pad = pad_id(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    device = next(model.parameters()).device
    generated: list[list[int]] = []  # scorable texts (>= 2 tokens), in prompt order
    ppls: list[float] = []
    done, new_tokens, generation_seconds, cancelled = 0, 0, 0.0, False
    started = time.perf_counter()
    torch.manual_seed(config.seed)  # scoring between batches draws no random numbers
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        input_ids, mask = _left_padded(batch, pad)
        width = input_ids.shape[1]
        t = time.perf_counter()
        watch = _BatchWatch(emit, cancel, width, GenerationProgress(
            done, len(prompts), new_tokens / max(generation_seconds, 1e-9), "", list(ppls), 0, config.max_new_tokens))
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=True,
                temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                repetition_penalty=config.repetition_penalty, max_new_tokens=config.max_new_tokens,
                pad_token_id=pad, use_cache=True, stopping_criteria=StoppingCriteriaList([watch]),
            )
        generation_seconds += time.perf_counter() - t
        texts = []
        for row, ids in enumerate(batch):
            continuation = out[row, width:].tolist()
            if eos is not None and eos in continuation:
                continuation = continuation[: continuation.index(eos)]
            texts.append(ids + continuation)
            new_tokens += len(continuation)
        done += len(batch)
        scorable = [g for g in texts if len(g) >= 2]
        if scorable:  # each text in one window: ppl over the whole text, prefix included
            longest = max(len(g) for g in scorable)
            ppls += [perplexity_of(s) for s in score_token_ids(model, scorable, window=longest, pad_id=pad)]
            generated += scorable
        emit(GenerationProgress(done, len(prompts), new_tokens / max(generation_seconds, 1e-9),
                                tokenizer.decode(texts[-1], skip_special_tokens=True), list(ppls),
                                max_new_tokens=config.max_new_tokens))
        if cancel is not None and cancel.is_set():  # a batch cut short by the cancel is kept, scored
            cancelled = True
            break
    kept, threshold = filter_by_perplexity(ppls, config.drop_fraction)
    records = [
        {"text": tokenizer.decode(ids, skip_special_tokens=True), "ppl": ppl, "kept": keep,
         "prefix": tokenizer.decode(ids[: config.prefix_tokens], skip_special_tokens=True), "tokens": len(ids)}
        for ids, ppl, keep in zip(generated, ppls, kept)
    ]
    metadata = _metadata(records, model_name, config, threshold, device, cancelled,
                         {"seconds": time.perf_counter() - started, "generation_seconds": generation_seconds,
                          "new_tokens": new_tokens})
    return GeneratedSet(records, threshold, metadata, cancelled)


def _left_padded(batch: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left (generation continues at the right edge) and their attention mask."""
    width = max(len(p) for p in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


def _metadata(records: list[dict], model_name: str, config: GenerationConfig, threshold, device, cancelled: bool,
              timing: dict) -> dict:
    """The set's provenance: generator, settings, filter, how many kept texts pass each length mark."""
    from ..provenance import environment_versions

    # Counted on the generated ids (prefix and BOS included); re-tokenizing the decoded text can differ
    # by a token or two. document mode needs more than seqlen tokens, document_pad more than seqlen - 3.
    kept_lengths = [r["tokens"] for r in records if r["kept"]]
    return {
        "kind": sets.SELF_GENERATED, "generator": model_name, "config": asdict(config), "filter_threshold": threshold,
        "kept_texts_longer_than": {str(mark): sum(n > mark for n in kept_lengths) for mark in LENGTH_MARKS},
        **timing, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device),
        "versions": environment_versions(), "cancelled": cancelled,
    }


def save_generated(name: str, result: GeneratedSet):
    return sets.save_set(name, result.records, result.metadata)
