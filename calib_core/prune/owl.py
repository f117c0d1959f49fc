"""OWL (Yin et al. 2024): outlier-weighted layerwise sparsity.

Layers with more outliers (Wanda scores above M times the layer mean) are pruned less. Unstructured:
the mean sparsity over layers stays at the target. Mixed N:M (the authors' rule): each layer gets its
own N of M, and the achieved mean sparsity may differ from the target (the run records it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch

from ..errors import ConfigError
from ..models import weight_matrix
from .events import AllocationEvent
from .masks import Pattern, row_chunks
from .options import option
from .wanda import wanda_scores


@dataclass(frozen=True)
class OWLOptions:
    """OWL's options (PruneConfig fields). M and lambda default by pattern, filled when a config is resolved."""

    owl_m: float | None = option(None, "outlier threshold M (default 5; 6 for N:M)", kind=float, low=0, high=100,
                                 low_open=True, auto=(5.0, 6.0), label="OWL M")
    owl_lambda: float | None = option(None, "OWL lambda (default 0.08; 2 in units of N for N:M)", kind=float, low=0,
                                      high=8, auto=(0.08, 2.0), label="OWL lambda")
    owl_nm_rule: str = option("original", "mixed N:M: original (the authors': width lambda, mean N may drift) or "
                              "balanced (our variant: width 2 lambda, mean N kept)", choices=("original", "balanced"),
                              label="OWL N:M rule")


def outlier_ratio(scores: list[torch.Tensor] | Callable[[], Iterable[torch.Tensor]], threshold_m: float) -> float:
    """D_l = 100 * #(score > M * mean score) / #scores over all Linears of one block. `scores` may be a
    function yielding the block's scores in pieces: it is called twice (the mean, then the count), so
    that the block's scores never exist in full (a streamed block holds little more than its weights)."""
    pieces = scores if callable(scores) else (lambda: iter(scores))
    total, count = 0.0, 0
    for piece in pieces():
        total += float(piece.sum(dtype=torch.float64))
        count += piece.numel()
    threshold = threshold_m * (total / count)
    above = sum(int((piece.float() > threshold).sum()) for piece in pieces())
    return 100.0 * above / count


def _centered_rank(ratios: list[float], width: float) -> list[float]:
    """Outlier ratios min-max scaled to [0, width], minus their mean."""
    lo, hi = min(ratios), max(ratios)
    if hi == lo:
        return [0.0] * len(ratios)
    r = [(d - lo) / (hi - lo) * width for d in ratios]
    mean_r = sum(r) / len(r)
    return [x - mean_r for x in r]


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """sparsity_l = 1 - (r_l - mean(r) + (1 - S)), r scaled to [0, 2 lambda]: mean equals S, more
    outliers -> less pruning."""
    sparsities = [1.0 - (c + (1.0 - target)) for c in _centered_rank(ratios, 2 * lam)]
    if min(sparsities) < 0 or max(sparsities) >= 1:
        raise ConfigError(
            f"OWL lambda {lam} pushes layer sparsities outside [0, 1) around target {target}: "
            f"choose a smaller lambda."
        )
    return sparsities


def owl_nm_allocation(ratios: list[float], pattern: Pattern, lam: float, rule: str = "original") -> list[Pattern]:
    """Mixed N:M: a per-layer N around the target N (more outliers -> fewer zeros).

    "original" (the authors' rule): r scaled to [0, lambda] in units of N, N_l = N - round(r_l -
    mean r) with round half to even; nothing re-balances, so the layers' mean N may fall below the
    target. N_l = 0 leaves a layer dense; a setting that needs N_l outside [0, M-1] is refused.
    "balanced" (our variant): width 2 lambda, clipped to [0, M-1], then largest-remainder rounding
    that keeps the mean N at the target whenever the clipping allows it.
    """
    if rule == "balanced":
        return _balanced_nm_allocation(ratios, pattern, lam)
    if rule != "original":
        raise ConfigError(f"Unknown OWL N:M rule '{rule}'.")
    # Python's round() is round-half-to-even, as numpy's np.round in the authors' code.
    ns = [pattern.n - round(c) for c in _centered_rank(ratios, lam)]
    bad = [(layer, n) for layer, n in enumerate(ns) if not 0 <= n <= pattern.m - 1]
    if bad:
        layer, n = bad[0]
        raise ConfigError(
            f"OWL mixed N:M with lambda {lam} gives block {layer} N = {n}, outside [0, {pattern.m - 1}] for "
            f"{pattern}: choose a smaller lambda."
        )
    return [Pattern(n, pattern.m) for n in ns]


def _balanced_nm_allocation(ratios: list[float], pattern: Pattern, lam: float) -> list[Pattern]:
    wanted = [min(max(pattern.n - c, 0.0), pattern.m - 1.0) for c in _centered_rank(ratios, 2 * lam)]
    total = pattern.n * len(ratios)
    floors = [math.floor(w) for w in wanted]
    remaining = total - sum(floors)
    order = sorted(range(len(wanted)), key=lambda i: wanted[i] - floors[i], reverse=True)
    for i in order:  # round up the largest remainders
        if remaining > 0 and floors[i] < pattern.m - 1:
            floors[i] += 1
            remaining -= 1
    for i in reversed(order):  # clipping at 0 can overshoot: round down the smallest remainders
        if remaining < 0 and floors[i] > 0:
            floors[i] -= 1
            remaining += 1
    return [Pattern(n, pattern.m) for n in floors]


# ---------------------------------------------------------------- the engine's hooks (prune/methods.py)
def owl_allocate(scan: Iterable[tuple[dict, dict]], config):
    """Per-block targets from one pass over the dense model: `scan` yields each block's prunable
    modules and their input statistics in turn; a block's outlier ratio is that of its Wanda scores.
    Returns [(sparsity, pattern)] per block and the AllocationEvent the run records."""
    ratios = [outlier_ratio(partial(_wanda_score_pieces, modules, stats), config.owl_m) for modules, stats in scan]
    pattern = config.parsed_pattern
    if pattern.is_nm:
        targets = [(p.sparsity, p) for p in owl_nm_allocation(ratios, pattern, config.owl_lambda, config.owl_nm_rule)]
    else:
        targets = [(s, pattern) for s in owl_sparsities(ratios, config.sparsity, config.owl_lambda)]
    sparsities = [s for s, _ in targets]
    return targets, AllocationEvent(ratios, sparsities, [str(p) for _, p in targets], sum(sparsities) / len(sparsities))


def _wanda_score_pieces(modules: dict, stats: dict):
    """A block's Wanda scores, a few rows of one Linear at a time."""
    for name, module in modules.items():
        weight = weight_matrix(module)
        for rows in row_chunks(*weight.shape):
            yield wanda_scores(weight[rows], stats[name])


def owl_details(config, memo: dict, allocation, overall: float) -> dict:
    """What an OWL run's record states: M, lambda, the planned and the achieved sparsity."""
    details = {"m": config.owl_m, "lambda": config.owl_lambda, "target_sparsity": config.target_sparsity,
               "planned_sparsity": allocation.planned_sparsity if allocation else None, "achieved_sparsity": overall}
    if config.parsed_pattern.is_nm:
        details["nm_rule"] = config.owl_nm_rule
        if config.base != "wanda":
            details["extension"] = (f"mixed N:M on a {config.base} base is a Calibration Lab extension: the OWL "
                                    "authors mix N only for Wanda")
    planned = details["planned_sparsity"]
    details["summary"] = (f"OWL: target sparsity {details['target_sparsity']:.4f}, planned mean "
                          + (f"{planned:.4f}" if planned is not None else "-") + f", achieved {overall:.4f}"
                          + (f". {details['extension']}." if "extension" in details else ""))
    return {"owl": details}
