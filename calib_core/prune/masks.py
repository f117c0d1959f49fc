"""Sparsity patterns and the mask helpers every method shares. A mask is a bool tensor shaped like
the weight [out, in]; True marks a weight to prune (set to zero)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class Pattern:
    """Unstructured (n = m = 0) or semi-structured N:M (n zeros in every m consecutive inputs)."""

    n: int = 0
    m: int = 0

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        return self.n / self.m if self.is_nm else float("nan")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else "unstructured"


UNSTRUCTURED = Pattern()


def parse_pattern(text: str) -> Pattern:
    text = (text or "unstructured").strip().lower()
    if text == "unstructured":
        return UNSTRUCTURED
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"Pattern '{text}' is neither 'unstructured' nor N:M (e.g. 2:4, 4:8).")
    n, m = int(parts[0]), int(parts[1])
    if not 0 < n < m:
        raise ConfigError(f"N:M pattern '{text}' needs 0 < N < M (N weights pruned of every M).")
    return Pattern(n, m)


def check_sparsity(sparsity: float) -> None:
    if not isinstance(sparsity, (int, float)) or math.isnan(sparsity) or not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"Sparsity must be in [0, 1) (fraction of weights pruned), got {sparsity!r}.")


# Rows are scored and selected this many elements at a time (4 MB of fp32 scores): a selection's
# temporaries (kthvalue copies its input and makes int64 indices, 12 bytes per element) then stay
# small next to the weight matrix, which matters most when a streamed model holds little else.
ROW_CHUNK_ELEMENTS = 1 << 20


def row_chunks(rows: int, cols: int) -> list[slice]:
    """Consecutive row ranges of about ROW_CHUNK_ELEMENTS elements each (at least one row)."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(cols, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def lowest_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune exactly floor(in * sparsity) lowest-scoring weights in every row."""
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return mask
    for rows in row_chunks(*scores.shape):
        mask[rows] = _lowest_k_per_row(scores[rows], k)
    return mask


def _lowest_k_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    # kthvalue + compare is about twice as fast as a sort; rows with ties at the threshold would
    # prune too many, so only those rows are sorted, to take an exact count.
    mask = scores <= torch.kthvalue(scores, k, dim=1, keepdim=True).values
    tied = mask.sum(1) != k
    if tied.any():
        mask[tied] = break_ties_by_index(scores[tied], k)
    return mask


def break_ties_by_index(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k lowest scores of each row, equal scores taken in column order: the rule of Wanda's code
    (`torch.sort(..., stable=True)`, the first k indices), and DSnoT's, which builds on it."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)


def lowest_per_matrix(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune exactly floor(numel * sparsity) lowest-scoring weights of the whole matrix. Selected on
    the CPU whatever the scores' device: a whole-matrix kthvalue is slow on CUDA, and CUDA's topk
    breaks ties differently, so a GPU run would prune other weights than a CPU run."""
    if scores.device.type != "cpu":
        return lowest_per_matrix(scores.cpu(), sparsity).to(scores.device)
    k = int(scores.numel() * sparsity)
    flat = scores.flatten()
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    mask = flat <= torch.kthvalue(flat, k).values
    if int(mask.sum()) != k:  # ties at the threshold: take an exact count
        mask = torch.zeros_like(mask)
        mask[torch.topk(flat, k, largest=False).indices] = True
    return mask.view_as(scores)


def lowest_n_of_m(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """In every group of m consecutive input columns of each row, prune the n lowest scores."""
    out_features, in_features = scores.shape
    if in_features % pattern.m:
        raise ConfigError(
            f"N:M pattern {pattern} needs the input width ({in_features}) to be a multiple of {pattern.m}."
        )
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if pattern.n == 0:
        return mask
    groups = scores.reshape(out_features, in_features // pattern.m, pattern.m)
    mask_groups = mask.view(out_features, in_features // pattern.m, pattern.m)
    for rows in row_chunks(out_features, in_features):
        idx = torch.topk(groups[rows], pattern.n, dim=2, largest=False).indices
        mask_groups[rows].scatter_(2, idx, True)
    return mask


def mask_from_scores(scores: torch.Tensor, sparsity: float, pattern: Pattern, per_row: bool) -> torch.Tensor:
    if pattern.is_nm:
        return lowest_n_of_m(scores, pattern)
    return lowest_per_row(scores, sparsity) if per_row else lowest_per_matrix(scores, sparsity)
