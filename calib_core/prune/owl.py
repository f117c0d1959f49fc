"""OWL (Yin et al. 2024): outlier-weighted layerwise sparsity.

Layers with more outliers (Wanda scores above M times the layer mean) are pruned less, while the
mean sparsity over layers stays at the target.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .masks import Pattern


def outlier_ratio(scores: list[torch.Tensor], threshold_m: float) -> float:
    """D_l = 100 * #(score > M * mean score) / #scores over all Linears of one block."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return float(100.0 * (flat > threshold_m * flat.mean()).sum() / flat.numel())


def _centered_rank(ratios: list[float], lam: float) -> list[float]:
    lo, hi = min(ratios), max(ratios)
    if hi == lo:
        return [0.0] * len(ratios)
    r = [(d - lo) / (hi - lo) * 2 * lam for d in ratios]
    mean_r = sum(r) / len(r)
    return [x - mean_r for x in r]


def owl_sparsities(ratios: list[float], target: float, lam: float) -> list[float]:
    """sparsity_l = 1 - (r_l - mean(r) + (1 - S)): mean equals S, more outliers -> less pruning."""
    sparsities = [1.0 - (c + (1.0 - target)) for c in _centered_rank(ratios, lam)]
    if min(sparsities) < 0 or max(sparsities) >= 1:
        raise ConfigError(
            f"OWL lambda {lam} pushes layer sparsities outside [0, 1) around target {target}: "
            f"choose a smaller lambda."
        )
    return sparsities


def owl_nm_allocation(ratios: list[float], pattern: Pattern, lam: float) -> list[Pattern]:
    """Mixed N:M: a per-layer N around the target N (lambda in units of N), keeping sum(N) fixed.

    Continuous N_l = N - (r_l - mean r) is clipped to [0, M-1] and rounded by largest remainder so
    the layers' mean N equals the target N whenever the clipping allows it.
    """
    wanted = [min(max(pattern.n - c, 0.0), pattern.m - 1.0) for c in _centered_rank(ratios, lam)]
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
