"""Magnitude pruning: score |W|, one threshold per weight matrix (no calibration data)."""

import torch

from .masks import Pattern, mask_from_scores


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: Pattern) -> torch.Tensor:
    return mask_from_scores(weight.abs().float(), sparsity, pattern, per_row=False)
