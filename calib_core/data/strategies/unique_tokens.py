"""unique-tokens: model-free greedy coverage (ZipCal). Repeatedly the candidate adding the most normalised
token strings not yet seen (ties: the earlier candidate); each step looks at a seeded random subsample of the
remaining candidates when more than coverage_subsample remain."""

from __future__ import annotations

import random as random_module

import torch

from .base import POOL_FACTOR, Selection, SelectionContext, Setting, Strategy


def normalised_tokens(tokenizer, ids: torch.Tensor, lengths: list[int]) -> list[set[str]]:
    """Per window, its set of normalised token strings: each id decoded alone, lower-cased, surrounding
    whitespace stripped; tokens that are only whitespace (or decode to nothing) are dropped."""
    vocabulary: dict[int, str] = {}
    out = []
    for row, length in zip(ids.tolist(), lengths):
        strings = set()
        for token in row[:length]:
            if token not in vocabulary:
                vocabulary[token] = tokenizer.decode([token]).strip().lower()
            if vocabulary[token]:
                strings.add(vocabulary[token])
        out.append(strings)
    return out


def greedy_coverage(token_sets: list[set], count: int, subsample: int, seed: int) -> tuple[list[int], list[int]]:
    """`count` candidates chosen one by one, each adding the most not-yet-seen strings among the remaining
    candidates (a seeded random subsample of `subsample` of them when more remain); ties: the lower
    index. Returns the chosen indices and the new strings each added."""
    rng = random_module.Random(seed)
    seen: set = set()
    remaining = list(range(len(token_sets)))
    chosen, gains = [], []
    for _ in range(count):
        looked_at = sorted(rng.sample(remaining, subsample)) if len(remaining) > subsample else remaining
        best = max(looked_at, key=lambda i: (len(token_sets[i] - seen), -i))
        gains.append(len(token_sets[best] - seen))
        seen |= token_sets[best]
        chosen.append(best)
        remaining.remove(best)
    return chosen, gains


def _unique_tokens(ctx: SelectionContext) -> Selection:
    sets_ = normalised_tokens(ctx.tokenizer, ctx.pool_ids, ctx.pool_lengths)
    chosen, gains = greedy_coverage(sets_, ctx.nsamples, ctx.options["coverage_subsample"], ctx.seed)
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen, [float(g) for g in gains],
                     "new normalised token strings the candidate added at its step (higher is chosen)",
                     details={"normalisation": "each token id decoded alone, lower-cased, whitespace stripped; "
                                               "whitespace-only tokens dropped",
                              "distinct_strings": len(set().union(*(sets_[i] for i in chosen)))})


STRATEGY = Strategy("unique-tokens", "model-free: the pool windows covering the most distinct tokens",
                    "Greedy coverage (ZipCal): from a pool of candidate windows, repeatedly keeps the one that adds the "
                    "most token strings not yet seen (lower-cased, whitespace stripped). Needs no model, so it costs "
                    "almost nothing.",
                    False, True, (POOL_FACTOR, Setting("coverage_subsample", 2000, "candidates looked at per step (a seeded "
                                                       "random subsample when more remain; ZipCal: 2,000)", low=1,
                                                       high=10**7)), _unique_tokens)
