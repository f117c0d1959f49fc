"""Mechanism-based proxies of how a calibration set will prune for a target, without pruning: from one dense
forward over a set's windows, each prunable Linear's input-channel norms ||X_j|| (the quantity Wanda's,
OWL's and RIA's scores multiply; SparseGPT's Hessian diagonal is 2 ||X_j||^2). Two proxies compare a
candidate calibration set with the target text:

- norm divergence: per module, the mean over channels of |log2(norm_candidate / norm_target)|, averaged
  over modules (0 = the same norms; the Inside a layer page's per-block quantity);
- predicted mask Jaccard: per module, the Jaccard of the weights the method would keep from the
  candidate's statistics and from the target's, at the same sparsity or N:M pattern (Wanda: |W| ||X_j||
  per row; OWL: Wanda's score with each statistics' own per-block allocation; SparseGPT: its static
  score w^2 (H_jj + damping) per row, the diagonal approximation of its w^2 / [H^-1]_jj, since its
  weight updates need the pruning itself), pooled over modules by size.

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
SPARSEGPT_STATIC = "SparseGPT's static score w^2 (H_jj + damping), the diagonal approximation of w^2 / [H^-1]_jj"


@dataclass
class ChannelNorms:
    """Per prunable Linear, keyed (block, module name): ||X_j|| = sqrt(sum over tokens of x_j^2 / windows)
    over one set of windows, from the dense model."""

    norms: dict[tuple[int, str], torch.Tensor]
    windows: int
    tokens: int


class _LastBlockDone(Exception):
    """Raised after the last decoder block: the final norm and the LM head feed no prunable Linear's input
    (on gemma3-270m the head is most of a forward's arithmetic)."""


def _stop(_module, _inputs, _output):
    raise _LastBlockDone


def dense_channel_norms(model, ids: torch.Tensor, lengths: list[int] | None = None, batch_size: int = 8) -> ChannelNorms:
    """One dense forward over `ids` [windows, seqlen] (each window's first `lengths[i]` tokens real; padding
    is not counted), with every prunable Linear's input sum of squares accumulated by a hook, stopped after
    the last decoder block."""
    lengths = lengths or [ids.shape[1]] * ids.shape[0]
    sums: dict[tuple[int, str], torch.Tensor] = {}
    real: list[torch.Tensor] = []  # the current batch's real-token mask, read by every hook
    hooks = []

    def hook(key):
        def accumulate(_module, inputs, _output):
            x = inputs[0].float() * real[0].unsqueeze(-1)
            sums[key] = sums.get(key, 0) + x.square().sum(dim=(0, 1))
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
    windows = ids.shape[0]
    return ChannelNorms({key: (total / windows).sqrt().cpu() for key, total in sums.items()}, windows, sum(lengths))


def norm_divergence(a: ChannelNorms, b: ChannelNorms) -> float:
    """The mean over modules of the mean over channels of |log2(norm_a / norm_b)| (0: identical norms)."""
    tiny = 1e-12
    per_module = [(a.norms[key].clamp_min(tiny) / b.norms[key].clamp_min(tiny)).log2().abs().mean()
                  for key in a.norms]
    return float(torch.stack(per_module).mean())


def _scores(weight: torch.Tensor, norms: torch.Tensor, config) -> torch.Tensor:
    w = weight.abs().float()
    if config.method == "sparsegpt":
        diag = 2.0 * norms.square()
        return w.square() * (diag + config.sparsegpt_damp * diag.mean()).unsqueeze(0)
    return w * norms.unsqueeze(0)  # Wanda's score (OWL ranks and masks with it)


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
        ratios = [outlier_ratio([_scores(weight_matrix(m), stats.norms[(i, n)], config)
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
            scores = _scores(weight_matrix(module), stats.norms[(index, name)], config)
            masks[(index, name)] = ~mask_from_scores(scores, sparsity, block_pattern, per_row=True)
    return masks


def packed_masks(model, stats: ChannelNorms, config: PruneConfig) -> dict[tuple[int, str], np.ndarray]:
    """`predicted_masks` as packed bits (an eighth of the memory): to compare one set's masks with many."""
    return {key: np.packbits(mask.numpy().ravel()) for key, mask in predicted_masks(model, stats, config).items()}


def packed_jaccard(a: dict[tuple[int, str], np.ndarray], b: dict[tuple[int, str], np.ndarray]) -> float:
    """|K_a & K_b| / |K_a | K_b| pooled over every module of two packed mask sets."""
    both = sum(int(np.bitwise_count(a[key] & b[key]).sum()) for key in a)
    either = sum(int(np.bitwise_count(a[key] | b[key]).sum()) for key in a)
    return both / either if either else 1.0


def predicted_mask_jaccard(model, candidate: ChannelNorms, target: ChannelNorms, config: PruneConfig) -> float:
    """|K_c & K_t| / |K_c | K_t| pooled over every prunable Linear: the kept weights the method would choose
    from the candidate's statistics and from the target's (1 = the same mask)."""
    return packed_jaccard(packed_masks(model, candidate, config), packed_masks(model, target, config))
