"""DSnoT (Zhang et al. 2024): training-free prune-and-grow on top of an initial mask.

For each output row r the expected output shift of pruning is err_r = sum_{j pruned} W_rj * mean_j
(mean_j: token sums of input feature j averaged over calibration sequences). Each cycle every active
row swaps one weight: it regrows the pruned weight whose W_rj * mean_j / var_j^p most strongly
cancels err_r and prunes a kept weight, so row sparsity (and every N:M group) stays as it was.

Swap rules (`rule`):
- "original" (the authors' default, `without_same_sign`): candidates are walked in precomputed
  orders, one step per cycle. Regrow: initially pruned weights sorted by W*mean/var^p, taken from
  the top when err > 0 and from the bottom otherwise. Cut (unstructured): initially kept weights,
  those with a negative contribution in ascending Wanda order followed by the positive ones in
  descending Wanda order, taken from the front when err >= 0 and from the back when err < 0.
  A row keeps swapping, with no improvement test, while |err| > threshold, for at most `max_cycles`.
- "same-sign": as "original", plus the authors' optional test that err keeps its initial sign.
- "improve" (our variant): candidates are re-chosen each cycle among the current mask, a swap is
  kept only if it shrinks |err|, and a row stops at its first rejected swap.
N:M (the authors' loop, for "original" and "same-sign"): the regrow walk is as above; the cut is the
kept weight with the lowest initial metric in the regrown weight's group of M, whatever its sign, and
a swap also needs err to keep its initial sign.

Where the authors' walk would run past the last candidate of the needed sign (into weights that are
already kept), the row stops instead; with real widths and 50 cycles this does not happen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import Pattern, mask_from_scores
from .options import option
from .sparsegpt import sparsegpt_static_scores
from .stats import InputStats
from .wanda import wanda_scores


@dataclass(frozen=True)
class DSnoTOptions:
    """DSnoT's options (PruneConfig fields; the defaults are the authors' unless a help says "our variant")."""

    dsnot_threshold: float = option(0.1, "stop a row's swaps once |err| is at most this", low=0, high=100,
                                    label="DSnoT threshold")
    dsnot_cycles: int = option(50, "swaps per row at most", low=1, high=1000, label="DSnoT cycles")
    dsnot_var_power: float = option(1.0, "exponent of the variance in the regrow score", low=0, high=10,
                                    label="DSnoT variance power")
    dsnot_sublayers: str = option("skip-mlp", "modules DSnoT refines; skip-mlp (the authors' default) keeps the "
                                  "initial mask on mlp.*", choices=("skip-mlp", "all", "attention", "mlp"),
                                  label="DSnoT sublayers")
    dsnot_rule: str = option("original", "original: swap while |err| > threshold (the authors' default); same-sign: "
                             "also keep err's sign; improve: our variant, a swap must shrink |err|",
                             choices=("original", "same-sign", "improve"), label="DSnoT rule")
    dsnot_sparsegpt_init: str = option("static", "on a SparseGPT base: static per-row W^2/diag(H^-1)^2 (the "
                                       "authors') or full (our variant: a whole SparseGPT pass's mask)",
                                       choices=("static", "full"), label="DSnoT SparseGPT init")
    dsnot_threshold_scale: str = option("none", "seqlen: scale the threshold by seqlen/2048 (the authors tuned 0.1 "
                                        "at 2048 tokens)", choices=("none", "seqlen"), label="DSnoT threshold scale")


def dsnot_refine(
    weight: torch.Tensor,
    mask: torch.Tensor,
    stats: InputStats,
    pattern: Pattern,
    threshold: float = 0.1,
    max_cycles: int = 50,
    var_power: float = 1.0,
    rule: str = "original",
    initial_metric: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return a refined copy of `mask` (True = pruned).

    `initial_metric` is the score the initial mask was chosen by (default: Wanda's); the N:M loop
    cuts by it, as the authors' code does.
    """
    W = weight.float()
    contrib = W * stats.token_sum_mean().unsqueeze(0)
    regrow_key = contrib / stats.variance().clamp_min(1e-12).pow(var_power).unsqueeze(0)
    wanda = wanda_scores(W, stats)
    if rule == "improve":
        return _refine_improving(mask.clone(), contrib, regrow_key, wanda, pattern, threshold, max_cycles)
    if rule not in ("original", "same-sign"):
        raise ValueError(f"Unknown DSnoT rule '{rule}'.")
    if pattern.is_nm:
        metric = (initial_metric if initial_metric is not None else wanda).float()
        return _refine_nm(mask.clone(), contrib, regrow_key, metric, pattern, threshold, max_cycles)
    return _refine_unstructured(mask.clone(), contrib, regrow_key, wanda, threshold, max_cycles,
                                same_sign=rule == "same-sign")


class _RegrowWalk:
    """The authors' regrow order: every row's weights sorted by W*mean/var^p with kept weights at 0,
    walked from the bottom (err <= 0) and from the top (err > 0), one step per cycle."""

    def __init__(self, mask: torch.Tensor, regrow_key: torch.Tensor):
        self.mask0 = mask.clone()
        self.key = torch.where(mask, regrow_key, torch.zeros_like(regrow_key))
        self.order = torch.argsort(self.key, dim=1, stable=True)
        rows, cols = mask.shape
        self.low = torch.zeros(rows, dtype=torch.long, device=mask.device)
        self.high = torch.full((rows,), cols - 1, dtype=torch.long, device=mask.device)

    def step(self, err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate column per row, whether it is an initially pruned weight of the needed sign)."""
        from_top = err > 0
        position = torch.where(from_top, self.high, self.low)
        candidate = self.order.gather(1, position.clamp(0, self.order.shape[1] - 1)[:, None]).squeeze(1)
        key = self.key.gather(1, candidate[:, None]).squeeze(1)
        valid = self.mask0.gather(1, candidate[:, None]).squeeze(1) & torch.where(from_top, key > 0, key < 0)
        self.high -= from_top.long()
        self.low += (~from_top).long()
        return candidate, valid


def _refine_unstructured(mask, contrib, regrow_key, wanda, threshold, max_cycles, same_sign):
    rows, cols = mask.shape
    err = (contrib * mask).sum(1)
    initial_sign = torch.sign(err)
    regrow = _RegrowWalk(mask, regrow_key)
    # Cut order: kept weights by ascending Wanda (rank p), then negative contributions in that order,
    # exact zeros, positive contributions reversed; pruned weights sort last.
    rank = torch.empty_like(mask, dtype=torch.long)
    by_wanda = torch.argsort(torch.where(mask, torch.full_like(wanda, float("inf")), wanda), dim=1, stable=True)
    rank.scatter_(1, by_wanda, torch.arange(cols, device=mask.device).expand(rows, cols).contiguous())
    key = torch.where(contrib < 0, rank, torch.where(contrib == 0, cols + rank, 3 * cols - rank))
    cut_order = torch.argsort(torch.where(mask, torch.full_like(key, 4 * cols), key), dim=1, stable=True)
    front = torch.zeros(rows, dtype=torch.long, device=mask.device)
    back = (~mask).sum(1) - 1
    active = torch.ones(rows, dtype=torch.bool, device=mask.device)
    row_index = torch.arange(rows, device=mask.device)
    for _ in range(max_cycles):
        if not active.any():
            break
        grow, grow_ok = regrow.step(err)
        from_back = err < 0
        position = torch.where(from_back, back, front)
        cut = cut_order.gather(1, position.clamp(0, cols - 1)[:, None]).squeeze(1)
        cut_ok = front <= back
        back -= from_back.long()
        front += (~from_back).long()
        grow_value = contrib[row_index, grow]
        cut_value = contrib[row_index, cut]
        active &= (err.abs() > threshold) & grow_ok & cut_ok
        if same_sign:
            active &= torch.sign(err + cut_value - grow_value) == initial_sign
        swap = active.nonzero().squeeze(1)
        mask[swap, grow[swap]] = False
        mask[swap, cut[swap]] = True
        err[swap] += cut_value[swap] - grow_value[swap]
    return mask


def _refine_nm(mask, contrib, regrow_key, metric, pattern, threshold, max_cycles):
    rows, cols = mask.shape
    m = pattern.m
    err = (contrib * mask).sum(1)
    initial_sign = torch.sign(err)
    regrow = _RegrowWalk(mask, regrow_key)
    # Initially pruned and already cut weights can never be cut: their metric is infinite.
    cut_metric = torch.where(mask, torch.full_like(metric, float("inf")), metric)
    active = torch.ones(rows, dtype=torch.bool, device=mask.device)
    row_index = torch.arange(rows, device=mask.device)
    offsets = torch.arange(m, device=mask.device)
    for _ in range(max_cycles):
        if not active.any():
            break
        grow, grow_ok = regrow.step(err)
        group = (grow - grow % m)[:, None] + offsets
        in_group = cut_metric.gather(1, group)
        lowest, where = in_group.min(1)
        cut = group.gather(1, where[:, None]).squeeze(1)
        grow_value = contrib[row_index, grow]
        cut_value = contrib[row_index, cut]
        active &= (err.abs() > threshold) & grow_ok & torch.isfinite(lowest)
        active &= torch.sign(err + cut_value - grow_value) == initial_sign
        swap = active.nonzero().squeeze(1)
        mask[swap, grow[swap]] = False
        mask[swap, cut[swap]] = True
        cut_metric[swap, cut[swap]] = float("inf")
        err[swap] += cut_value[swap] - grow_value[swap]
    return mask


def _refine_improving(mask, contrib, regrow_key, wanda, pattern, threshold, max_cycles):
    """Our variant: best candidates among the current mask; keep a swap only if |err| shrinks."""
    err = (contrib * mask).sum(1)
    active = err.abs() > threshold
    columns = torch.arange(mask.shape[1], device=mask.device)
    inf = torch.tensor(float("inf"), device=mask.device)
    for _ in range(max_cycles):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        sign = torch.sign(err[rows]).unsqueeze(1)
        c = contrib[rows]
        m = mask[rows]
        grow_score = torch.where(m & (sign * c > 0), sign * regrow_key[rows], -inf)
        grow = grow_score.argmax(1)
        can_grow = torch.isfinite(grow_score.gather(1, grow[:, None]).squeeze(1))
        prune_ok = ~m & (sign * c < 0)
        if pattern.is_nm:  # the swap must stay inside the regrown weight's group of m
            prune_ok &= (columns.unsqueeze(0) // pattern.m) == (grow // pattern.m).unsqueeze(1)
        prune_score = torch.where(prune_ok, wanda[rows], inf)
        cut = prune_score.argmin(1)
        can_cut = torch.isfinite(prune_score.gather(1, cut[:, None]).squeeze(1))
        new_err = err[rows] - c.gather(1, grow[:, None]).squeeze(1) + c.gather(1, cut[:, None]).squeeze(1)
        accept = can_grow & can_cut & (new_err.abs() < err[rows].abs())
        active[rows[~accept]] = False
        rows, grow, cut, new_err = rows[accept], grow[accept], cut[accept], new_err[accept]
        mask[rows, grow] = False
        mask[rows, cut] = True
        err[rows] = new_err
        active[rows] = new_err.abs() > threshold
    return mask


# ---------------------------------------------------------------- the engine's hooks (prune/methods.py)
def dsnot_module(name: str, weight: torch.Tensor, stats: InputStats, sparsity: float, pattern: Pattern, config,
                 memo: dict, base_prune) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One Linear under DSnoT: its base's initial mask (`base_prune`, the base method's prune), refined
    where the sublayer rule applies. A module it does not refine on the "full" SparseGPT start is
    pruned by SparseGPT itself, weight update included. `memo` keeps what the run's details report."""
    refine = _dsnot_applies(config.dsnot_sublayers, name)
    memo.setdefault("refined" if refine else "skipped", set()).add(name)
    initial_metric = None
    if config.base == "sparsegpt" and config.dsnot_sparsegpt_init == "static":
        # The DSnoT authors' SparseGPT base: the static saliency per row, weights unchanged.
        initial_metric = sparsegpt_static_scores(weight, stats.hessian(), config.sparsegpt_damp, overwrite_hessian=True)
        mask = mask_from_scores(initial_metric, sparsity, pattern, per_row=True)
    elif config.base == "sparsegpt" and not refine:
        return base_prune(weight, stats, sparsity, pattern, config)
    else:
        # Wanda, or our "full" variant: DSnoT refines a whole SparseGPT pass's mask over the original weights.
        mask = base_prune(weight, stats, sparsity, pattern, config)[0]
    if refine:
        mask = dsnot_refine(weight, mask, stats, pattern, effective_threshold(config, memo.get("seqlen")),
                            config.dsnot_cycles, config.dsnot_var_power, config.dsnot_rule, initial_metric)
    return mask, None


def effective_threshold(config, seqlen: int | None) -> float:
    """The swap threshold; scaled by seqlen/2048 on request (the authors tuned 0.1 at 2048 tokens)."""
    if config.dsnot_threshold_scale == "seqlen" and seqlen:
        return config.dsnot_threshold * seqlen / 2048
    return config.dsnot_threshold


def _dsnot_applies(which: str, name: str) -> bool:
    if which == "skip-mlp":  # the authors' name test: the first name part is not "mlp"
        return name.split(".")[0] != "mlp"
    return which == "all" or (which == "attention") == _is_attention(name)


def _is_attention(name: str) -> bool:
    return "attn" in name or "attention" in name


def dsnot_details(config, memo: dict, allocation, overall: float) -> dict:
    """What a DSnoT run's record states: its rule, which modules it refined, the threshold it used."""
    details = {
        "rule": config.dsnot_rule, "sublayers": config.dsnot_sublayers,
        "refined_modules": sorted(memo.get("refined", ())), "initial_mask_only": sorted(memo.get("skipped", ())),
        "threshold": config.dsnot_threshold, "threshold_scale": config.dsnot_threshold_scale,
        "effective_threshold": effective_threshold(config, memo.get("seqlen")), "seqlen": memo.get("seqlen"),
        "variance": "within-sequence variance, pooled over sequences with token weights",
    }
    if config.base == "sparsegpt":
        details["sparsegpt_init"] = config.dsnot_sparsegpt_init
    details["summary"] = (f"DSnoT ({details['rule']} rule, threshold {details['effective_threshold']:.4g} at seqlen "
                          f"{details['seqlen']}) refined {', '.join(details['refined_modules']) or 'nothing'}; "
                          f"initial mask only: {', '.join(details['initial_mask_only']) or 'nothing'}.")
    return {"dsnot": details}
