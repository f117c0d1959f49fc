"""Choosing a run's calibration windows with a strategy: its settings checked, the pool drawn, the strategy's
selection run (or reused from a sweep's cache) and recorded."""

from __future__ import annotations

import time

from ...errors import ConfigError, SourceError
from ..sources import CalibrationSet, build_calibration, fingerprint_tokens
from .base import RANDOM, SelectionContext
from .registry import STRATEGIES


def check_strategy(name: str, options: dict | None = None) -> dict:
    """The strategy's settings with defaults filled in, or a ConfigError (unknown strategy or setting, a
    value out of range: a pool factor below 1 would make the pool smaller than nsamples)."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown calibration strategy '{name}'; known: {', '.join(STRATEGIES)}.")
    strategy = STRATEGIES[name]
    known = {s.name: s for s in strategy.settings}
    unknown = set(options or {}) - set(known)
    if unknown:
        raise ConfigError(f"Strategy {name} has no setting {', '.join(sorted(unknown))}; "
                          f"its settings: {', '.join(known) or 'none'}.")
    return {s.name: s.check((options or {}).get(s.name, s.default)) for s in strategy.settings}


def non_default(name: str, options: dict | None) -> dict:
    """The settings that differ from the strategy's defaults (what a record or a command line states)."""
    defaults = {s.name: s.default for s in STRATEGIES[name].settings} if name in STRATEGIES else {}
    return {k: v for k, v in (options or {}).items() if defaults.get(k, object()) != v}


def selection_key(source: str, tokenizer, nsamples: int, seqlen: int, seed: int, mode: str, concat_separator: str,
                  strategy: str, options: dict, text_column) -> tuple:
    """What a selection depends on besides the dense model (sweeps reuse a selection across points)."""
    return (source, getattr(tokenizer, "name_or_path", ""), nsamples, seqlen, seed, mode, concat_separator, strategy,
            tuple(sorted(options.items())), text_column)


def build_strategy_calibration(source: str, tokenizer, nsamples: int, seqlen: int, seed: int = 0,
                               mode: str = "document", strategy: str = RANDOM, options: dict | None = None,
                               model=None, text_column: str | None = None, concat_separator: str = "\n\n",
                               cache: dict | None = None) -> CalibrationSet:
    """The run's calibration windows chosen by `strategy` (random: build_calibration's draw, unchanged).
    A model-based strategy runs its forwards on `model` as it is: call it before pruning. `cache` (a dict a
    sweep keeps) reuses a selection made for the same inputs on the same dense model."""
    resolved = check_strategy(strategy, options)
    chosen_by = STRATEGIES[strategy]
    if chosen_by.select is None:
        return build_calibration(source, tokenizer, nsamples, seqlen, seed, mode, text_column,
                                 concat_separator=concat_separator)
    if chosen_by.needs_model and model is None:
        raise ConfigError(f"Strategy {strategy} needs the model to score or generate its windows.")
    key = selection_key(source, tokenizer, nsamples, seqlen, seed, mode, concat_separator, strategy, resolved,
                        text_column)
    if cache is not None and key in cache:
        reused = cache[key]
        return CalibrationSet(**{**reused.__dict__, "strategy": {**reused.strategy, "reused": True}})
    started = time.perf_counter()
    pool = None
    context = SelectionContext(tokenizer, nsamples, seqlen, seed, resolved, source, model=model)
    if chosen_by.uses_pool:
        pool = build_calibration(source, tokenizer, resolved["pool_factor"] * nsamples, seqlen, seed, mode,
                                 text_column, concat_separator=concat_separator)
        context.pool_ids, context.pool_lengths = pool.input_ids, pool.unpadded_lengths
        if pool.nsamples < nsamples:  # a token tensor is its own pool, whatever its size
            raise SourceError(f"The pool of {source} has {pool.nsamples} windows, fewer than nsamples {nsamples}.")
    pool_seconds = time.perf_counter() - started
    selection = chosen_by.select(context)
    seconds = time.perf_counter() - started
    record = {"name": strategy, "settings": resolved, "seconds": seconds, "pool_seconds": pool_seconds,
              "pool": None if pool is None else {"source": source, "size": pool.nsamples, "seed": seed, "mode": mode,
                                                 "fingerprint": pool.fingerprint},
              "source_read": chosen_by.uses_pool,
              "chosen": selection.chosen, "scores": selection.scores, "score": selection.score,
              "pool_scores": selection.pool_scores, "details": selection.details, "reused": False}
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    base = pool or CalibrationSet(selection.ids, source, mode, seed, tok_name, "")
    out = CalibrationSet(
        selection.ids, source, mode if chosen_by.uses_pool else ("generated" if chosen_by.needs_model else "concat"), seed, tok_name,
        fingerprint_tokens(selection.ids), base.documents, concat_separator=base.concat_separator,
        pad_id=base.pad_id, padded_samples=sum(n < seqlen for n in selection.lengths),
        eligible_documents=base.eligible_documents, special_tokens=base.special_tokens, notes=list(base.notes),
        mix=base.mix, strategy=record, unpadded_lengths=list(selection.lengths))
    if cache is not None:
        cache[key] = out
    return out


def describe_strategy(name: str, options: dict | None = None) -> str:
    """A short label: the name and its non-default settings (Results, sweep labels)."""
    changed = non_default(name, options)
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")" if changed else "")
