"""Mechanism-based proxies of how a calibration set will prune for a target, without pruning: from one dense
forward over a set's windows, each prunable Linear's input-channel norms ||X_j|| (the quantity Wanda's,
OWL's and RIA's scores multiply) and, for SparseGPT, its Hessian H = (2 / n) X^T X, accumulated as the engine
accumulates them (prune/stats.InputStats). Two proxies compare a candidate calibration set with the target text:

- norm divergence: per module, the mean over channels of |log2(norm_candidate / norm_target)|, averaged
  over modules (0 = the same norms; the Inside a layer page's per-block quantity);
- predicted mask Jaccard: per module, the Jaccard of the weights the method would keep from the
  candidate's statistics and from the target's, at the same sparsity or N:M pattern (Wanda: |W| ||X_j||
  per row; OWL: Wanda's score with each statistics' own per-block allocation; SparseGPT: the engine's own
  selection, prune/sparsegpt.sparsegpt_prune on the dense weights and the set's Hessian, block by block of
  128 columns across all rows, with the weight updates its later blocks' choices depend on), pooled over
  modules by size.

Both are computed from dense activations: the engine's own statistics come from inputs that earlier
pruned blocks produced, so a prediction is an approximation even for Wanda (stated in every result)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models import decoder_blocks, prunable_modules, weight_matrix
from ..prune import PruneConfig
from ..prune.masks import mask_from_scores, parse_pattern
from ..prune.owl import outlier_ratio, owl_nm_allocation, owl_sparsities

PREDICTABLE = ("wanda", "owl", "sparsegpt")
APPROXIMATION = ("predicted from dense activations (the engine's statistics come from inputs that earlier pruned "
                 "blocks produce)")
SPARSEGPT_SELECTION = ("SparseGPT's own block-wise selection with its weight updates, from the set's Hessian "
                       "(prune/sparsegpt.py)")


@dataclass
class ChannelNorms:
    """Per prunable Linear, keyed (block, module name): ||X_j|| = sqrt(sum over tokens of x_j^2 / windows)
    over one set of windows, from the dense model."""

    norms: dict[tuple[int, str], torch.Tensor]
    windows: int
    tokens: int
    # SparseGPT's H = (2 / windows) sum X^T X per module (kept when asked for: an [in, in] matrix each)
    hessians: dict[tuple[int, str], torch.Tensor] | None = None


class _LastBlockDone(Exception):
    """Raised after the last decoder block: the final norm and the LM head feed no prunable Linear's input
    (on gemma3-270m the head is most of a forward's arithmetic)."""


def _stop(_module, _inputs, _output):
    raise _LastBlockDone


def dense_channel_norms(model, ids: torch.Tensor, lengths: list[int] | None = None, batch_size: int = 8,
                        hessians: bool = False) -> ChannelNorms:
    """One dense forward over `ids` [windows, seqlen] (each window's first `lengths[i]` tokens real; padding
    is not counted), with every prunable Linear's input statistics accumulated by a hook as the engine does
    (its sum of squares, and with `hessians` its X^T X), stopped after the last decoder block."""
    from ..prune.stats import InputStats

    lengths = lengths or [ids.shape[1]] * ids.shape[0]
    stats: dict[tuple[int, str], InputStats] = {}
    real: list[torch.Tensor] = []  # the current batch's real-token mask, read by every hook
    hooks = []

    def hook(key):
        def accumulate(_module, inputs, _output):
            x = inputs[0].float() * real[0].unsqueeze(-1)
            if key not in stats:
                stats[key] = InputStats(x.shape[-1], x.device, with_hessian=hessians)
            stats[key].add(x, x.shape[0])
        return accumulate

    blocks = decoder_blocks(model)
    for index, block in enumerate(blocks):
        for name, module in prunable_modules(block).items():
            hooks.append(module.register_forward_hook(hook((index, name))))
    hooks.append(blocks[-1].register_forward_hook(_stop))
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, ids.shape[0], batch_size):
                rows = range(start, min(start + batch_size, ids.shape[0]))
                batch = ids[list(rows)].to(device)
                mask = torch.zeros(batch.shape, dtype=torch.float32, device=device)
                for i, row in enumerate(rows):
                    mask[i, : lengths[row]] = 1.0
                real[:] = [mask]
                try:
                    model(input_ids=batch, attention_mask=mask.long(), use_cache=False)
                except _LastBlockDone:
                    pass
    finally:
        for handle in hooks:
            handle.remove()
    return ChannelNorms({key: s.feature_norm().cpu() for key, s in stats.items()}, ids.shape[0], sum(lengths),
                        {key: s.hessian().cpu() for key, s in stats.items()} if hessians else None)


def norm_divergence(a: ChannelNorms, b: ChannelNorms) -> float:
    """The mean over modules of the mean over channels of |log2(norm_a / norm_b)| (0: identical norms)."""
    tiny = 1e-12
    per_module = [(a.norms[key].clamp_min(tiny) / b.norms[key].clamp_min(tiny)).log2().abs().mean()
                  for key in a.norms]
    return float(torch.stack(per_module).mean())


def _scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    return weight.abs().float() * norms.unsqueeze(0)  # Wanda's score (OWL ranks and masks with it)


def needs_hessians(config: PruneConfig) -> bool:
    """Whether the method's predicted masks need each module's Hessian (dense_channel_norms(hessians=True))."""
    return config.resolved().method == "sparsegpt"


def predicted_masks(model, stats: ChannelNorms, config: PruneConfig) -> dict[tuple[int, str], torch.Tensor]:
    """The kept-weight mask (True = kept) of every prunable Linear that `config`'s method would choose from
    these statistics, each row compared on its own as the methods do (see the module docstring)."""
    config = config.resolved()
    if config.method not in PREDICTABLE:
        raise ValueError(f"Masks are predicted for {', '.join(PREDICTABLE)}, not {config.method}.")
    pattern = parse_pattern(config.pattern)
    blocks = list(enumerate(decoder_blocks(model)))
    settings = {index: (config.sparsity, pattern) for index, _ in blocks}
    if config.method == "owl":
        ratios = [outlier_ratio([_scores(weight_matrix(m), stats.norms[(i, n)])
                                 for n, m in prunable_modules(block).items()], config.owl_m) for i, block in blocks]
        if pattern.is_nm:
            settings = {i: (p.sparsity, p) for i, p in zip(settings, owl_nm_allocation(ratios, pattern, config.owl_lambda,
                                                                                        config.owl_nm_rule))}
        else:
            settings = {i: (s, pattern) for i, s in zip(settings, owl_sparsities(ratios, config.sparsity,
                                                                                 config.owl_lambda))}
    masks = {}
    for index, block in blocks:
        sparsity, block_pattern = settings[index]
        for name, module in prunable_modules(block).items():
            if config.method == "sparsegpt":
                masks[(index, name)] = ~_sparsegpt_pruned(weight_matrix(module), stats, (index, name), sparsity,
                                                          block_pattern, config)
                continue
            scores = _scores(weight_matrix(module), stats.norms[(index, name)])
            masks[(index, name)] = ~mask_from_scores(scores, sparsity, block_pattern, per_row=True)
    return masks


def _sparsegpt_pruned(weight, stats: ChannelNorms, key, sparsity, pattern, config) -> torch.Tensor:
    """The weights SparseGPT would prune (True) given these statistics' Hessian: the engine's own routine."""
    from ..prune.sparsegpt import sparsegpt_prune

    if stats.hessians is None:
        raise ValueError("SparseGPT's predicted masks need the sets' Hessians: dense_channel_norms(hessians=True).")
    return sparsegpt_prune(weight, stats.hessians[key], sparsity, pattern, config.sparsegpt_blocksize,
                           config.sparsegpt_damp)[1]


def packed_masks(model, stats: ChannelNorms, config: PruneConfig) -> dict[tuple[int, str], np.ndarray]:
    """`predicted_masks` as packed bits (an eighth of the memory): to compare one set's masks with many."""
    return {key: np.packbits(mask.numpy().ravel()) for key, mask in predicted_masks(model, stats, config).items()}


def packed_jaccard(a: dict[tuple[int, str], np.ndarray], b: dict[tuple[int, str], np.ndarray]) -> float:
    """|K_a & K_b| / |K_a | K_b| pooled over every module of two packed mask sets."""
    both = sum(int(np.bitwise_count(a[key] & b[key]).sum()) for key in a)
    either = sum(int(np.bitwise_count(a[key] | b[key]).sum()) for key in a)
    return both / either if either else 1.0
