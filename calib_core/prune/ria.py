"""RIA, Relative Importance and Activations (Zhang et al., ICLR 2024, "Plug-and-Play: An Efficient
Post-training Pruning Method for Large Language Models").

Score of weight (i, j) of a Linear W [out, in], with Wanda's per-input statistic s_j (the mean over
calibration samples of each sample's squared L2 norm of input feature j; `InputStats.feature_norm`
is sqrt(s_j)):

    RI_ij    = |W_ij| / sum_i' |W_i'j|  +  |W_ij| / sum_j' |W_ij'|     (column sum, then row sum)
    score_ij = RI_ij * sqrt(s_j) ** a                                   (a = 0.5 by default)

Selection, as the authors' released code does:
- unstructured, `selection="matrix"` (their default): ONE threshold for the whole matrix, the
  (k+1)-th lowest score with k = int(out * in * sparsity), and every score `<=` it is pruned: k+1
  weights, more where scores tie at the threshold;
- unstructured, `selection="row"` (their `--per_outneuron`): the int(in * sparsity) lowest of each
  output row, ties by column (a stable sort, like Wanda);
- N:M: the N lowest scores of every M consecutive inputs of each row; `reallocation="heuristic"`
  (their `--reallocation`, importance `sum`): input channels sorted by their score summed over
  outputs, dealt into M interleaved slots with every second slot reversed, N:M taken on the permuted
  columns and mapped back (the weights keep their order). Their optional linear-sum-assignment
  refinement, 2:4 sparse storage and post-hoc reconstruction are not implemented.
Scores are computed in fp32 (the authors' sums run in the model's dtype, fp16 in their scripts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import Pattern, lowest_n_of_m, lowest_per_row, row_chunks
from .options import option
from .stats import InputStats

DEFAULT_A = 0.5  # the authors' main.py default



@dataclass(frozen=True)
class RIAOptions:
    """RIA's options (PruneConfig fields; the defaults are the authors')."""

    ria_a: float = option(DEFAULT_A, "exponent a of the activation norm (the authors' default 0.5)", low=0, high=10,
                          label="RIA exponent a")
    ria_selection: str = option("matrix", "unstructured: matrix (the authors' default: prune every score <= the "
                                "(k+1)-th lowest of the matrix) or row (their --per_outneuron)",
                                choices=("matrix", "row"), label="RIA selection")
    ria_reallocation: str = option("off", "N:M: heuristic channel reallocation (their --reallocation) or off (their "
                                   "default)", choices=("off", "heuristic"), label="RIA N:M reallocation")


def ria_scores(weight: torch.Tensor, stats: InputStats, a: float = DEFAULT_A) -> torch.Tensor:
    """RI_ij * sqrt(s_j) ** a for the whole matrix, in fp32: the one full-size array a matrix-wide
    threshold needs; the column sums and each row's terms are made a few rows at a time."""
    columns = torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)
    for rows in row_chunks(*weight.shape):
        columns += weight[rows].abs().float().sum(0)
    activation = stats.feature_norm().pow(a)
    scores = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
    for rows in row_chunks(*weight.shape):
        magnitude = weight[rows].abs().float()
        scores[rows] = (magnitude / columns + magnitude / magnitude.sum(1, keepdim=True)) * activation
    return scores


def threshold_selection(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The authors' unstructured rule: prune every score <= the (k+1)-th lowest, k = int(numel * s).
    The threshold is a value, so the same weights are pruned on any device (found on the CPU, where a
    whole-matrix kthvalue is fast)."""
    k = int(scores.numel() * sparsity)
    if k >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores.flatten().cpu(), k + 1).values.to(scores.device)
    return scores <= threshold


def reallocated_order(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Heuristic channel reallocation: the permutation `index` (position -> original input channel)
    that deals the channels, sorted by summed score, into M interleaved slots, every second reversed."""
    columns = scores.shape[1]
    ranked = torch.sort(scores.sum(0), stable=True).indices
    index = torch.empty_like(ranked)
    for slot in range(m):
        part = ranked[columns * slot // m: columns * (slot + 1) // m]
        index[slot::m] = part if slot % 2 == 0 else part.flip(0)
    return index


def ria_mask(weight: torch.Tensor, stats: InputStats, sparsity: float, pattern: Pattern, a: float = DEFAULT_A,
             selection: str = "matrix", reallocation: str = "off") -> torch.Tensor:
    """Pruned positions (True) of `weight` under RIA's score and the authors' selection."""
    scores = ria_scores(weight, stats, a)
    if pattern.is_nm:
        if reallocation == "heuristic":
            index = reallocated_order(scores, pattern.m)
            mask = torch.empty_like(scores, dtype=torch.bool)
            mask[:, index] = lowest_n_of_m(scores[:, index], pattern)
            return mask
        return lowest_n_of_m(scores, pattern)
    if selection == "row":
        return lowest_per_row(scores, sparsity)
    return threshold_selection(scores, sparsity)


def ria_details(config, memo: dict, allocation, overall: float) -> dict:
    """What a RIA run's record states: the exponent and which selection ran."""
    nm = config.parsed_pattern.is_nm
    rule = ((f"N:M per group of {config.parsed_pattern.m}" + (", heuristic channel reallocation"
                                                             if config.ria_reallocation == "heuristic" else ""))
            if nm else {"matrix": "one threshold per matrix, score <= the (k+1)-th lowest (ties pruned)",
                        "row": "the lowest of each output row (ties by column)"}[config.ria_selection])
    return {"ria": {"a": config.ria_a, "selection": config.ria_selection, "reallocation": config.ria_reallocation,
                    "rule": rule, "summary": f"RIA (a = {config.ria_a:g}): {rule}; overall sparsity {overall:.4f}."}}
