"""DSnoT (Zhang et al. 2024): training-free prune-and-grow on top of an initial mask.

For each output row r the expected output shift of pruning is err_r = sum_{j pruned} W_rj * mean_j.
Each cycle, rows with |err_r| above the threshold swap one weight: regrow the pruned weight whose
contribution W_rj * mean_j / var_j^p best cancels err_r, and prune the kept weight with the lowest
Wanda score among those whose removal also moves err_r towards zero. A swap is kept only if it
reduces |err_r|; a row stops when it cannot improve. Row sparsity (and N:M groups) never change.
"""

from __future__ import annotations

import torch

from .masks import Pattern
from .stats import InputStats
from .wanda import wanda_scores


def dsnot_refine(
    weight: torch.Tensor,
    mask: torch.Tensor,
    stats: InputStats,
    pattern: Pattern,
    threshold: float = 0.1,
    max_cycles: int = 50,
    var_power: float = 1.0,
) -> torch.Tensor:
    """Return a refined copy of `mask` (True = pruned)."""
    W = weight.float()
    mask = mask.clone()
    mean = stats.token_sum_mean()
    contrib = W * mean.unsqueeze(0)
    regrow_metric = contrib / stats.variance().clamp_min(1e-12).pow(var_power).unsqueeze(0)
    prune_metric = wanda_scores(W, stats)
    err = (contrib * mask).sum(1)
    active = err.abs() > threshold
    columns = torch.arange(W.shape[1], device=W.device)
    inf = torch.tensor(float("inf"), device=W.device)
    for _ in range(max_cycles):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        sign = torch.sign(err[rows]).unsqueeze(1)
        c = contrib[rows]
        m = mask[rows]
        grow_score = torch.where(m & (sign * c > 0), sign * regrow_metric[rows], -inf)
        grow = grow_score.argmax(1)
        can_grow = torch.isfinite(grow_score.gather(1, grow[:, None]).squeeze(1))
        prune_ok = ~m & (sign * c < 0)
        if pattern.is_nm:  # the swap must stay inside the regrown weight's group of m
            prune_ok &= (columns.unsqueeze(0) // pattern.m) == (grow // pattern.m).unsqueeze(1)
        prune_score = torch.where(prune_ok, prune_metric[rows], inf)
        cut = prune_score.argmin(1)
        can_cut = torch.isfinite(prune_score.gather(1, cut[:, None]).squeeze(1))
        new_err = err[rows] - c.gather(1, grow[:, None]).squeeze(1) + c.gather(1, cut[:, None]).squeeze(1)
        accept = can_grow & can_cut & (new_err.abs() < err[rows].abs())
        done = rows[~accept]
        active[done] = False
        rows, grow, cut, new_err = rows[accept], grow[accept], cut[accept], new_err[accept]
        mask[rows, grow] = False
        mask[rows, cut] = True
        err[rows] = new_err
        active[rows] = new_err.abs() > threshold
    return mask
