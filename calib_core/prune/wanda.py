"""Wanda (Sun et al. 2024): score |W_ij| * ||X_j||_2, compared within each output row."""

import torch

from .masks import Pattern, mask_from_scores, row_chunks
from .stats import InputStats


def wanda_scores(weight: torch.Tensor, stats: InputStats) -> torch.Tensor:
    return weight.abs().float() * stats.feature_norm().unsqueeze(0)


def wanda_mask(weight: torch.Tensor, stats: InputStats, sparsity: float, pattern: Pattern) -> torch.Tensor:
    """Scored and selected a few rows at a time (rows are independent): no fp32 copy of the whole matrix."""
    mask = torch.empty(weight.shape, dtype=torch.bool, device=weight.device)
    for rows in row_chunks(*weight.shape):
        mask[rows] = mask_from_scores(wanda_scores(weight[rows], stats), sparsity, pattern, per_row=True)
    return mask
