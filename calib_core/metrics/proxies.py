"""Mechanism-based proxies of how a calibration set will prune for a target, without pruning: from one dense
forward over a set's windows, each prunable Linear's input-channel norms ||X_j|| (the quantity Wanda's,
OWL's and RIA's scores multiply) and, for SparseGPT, its Hessian H = (2 / n) X^T X, accumulated as the engine
accumulates them (prune/stats.InputStats). Two proxies compare a candidate calibration set with the target text:

- norm divergence: per module, the mean over channels of |log2(norm_candidate / norm_target)|, averaged
  over modules (0 = the same norms; the Inside a layer page's per-block quantity);
- predicted mask Jaccard: per module, the Jaccard of the weights the method would keep from the
  candidate's statistics and from the target's, at the same sparsity or N:M pattern, pooled over modules by
  size. The masks come from the method's own registry hooks (prune/methods.py) on the dense weights, as the
  engine calls them: an allocator's per-block targets (OWL) from a scan of these statistics, then the mask
  method's `prune` (Wanda's per-row |W| ||X_j||; SparseGPT's block-wise selection on the set's Hessian, with
  the weight updates its later blocks' choices depend on; RIA's relative importance).

Both are computed from dense activations: the engine's own statistics come from inputs that earlier
pruned blocks produced, so a prediction is an approximation even for Wanda (stated in every result)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models import decoder_blocks, prunable_modules, weight_matrix
from ..prune import PruneConfig
from ..prune.methods import HESSIAN, METHODS, mask_method, statistics_needed
from ..prune.stats import InputStats

APPROXIMATION = ("predicted from dense activations (the engine's statistics come from inputs that earlier pruned "
                 "blocks produce)")


def predictable() -> tuple[str, ...]:
    """The registry's methods whose masks the advisor predicts: every method that uses calibration data and
    prunes with its own or its base's mask hook, with or without an allocator; not refiners (DSnoT), whose
    swaps need the pruned model's outputs."""
    return tuple(name for name, m in METHODS.items() if m.needs_calibration and m.refine is None)


@dataclass
class ChannelNorms:
    """Per prunable Linear, keyed (block, module name): ||X_j|| = sqrt(sum over tokens of x_j^2 / windows)
    over one set of windows, from the dense model, and (until `release`) the input statistics themselves,
    which a method's own hooks read to predict its masks."""

    norms: dict[tuple[int, str], torch.Tensor]
    windows: int
    tokens: int
    inputs: dict[tuple[int, str], InputStats] | None = None

    def release(self) -> None:
        """Drop the input statistics (with Hessians, an [in, in] matrix per module); the norms stay."""
        self.inputs = None


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
    return ChannelNorms({key: s.feature_norm().cpu() for key, s in stats.items()}, ids.shape[0], sum(lengths), stats)


def norm_divergence(a: ChannelNorms, b: ChannelNorms) -> float:
    """The mean over modules of the mean over channels of |log2(norm_a / norm_b)| (0: identical norms)."""
    tiny = 1e-12
    per_module = [(a.norms[key].clamp_min(tiny) / b.norms[key].clamp_min(tiny)).log2().abs().mean()
                  for key in a.norms]
    return float(torch.stack(per_module).mean())


def needs_hessians(config: PruneConfig) -> bool:
    """Whether the method's predicted masks need each module's Hessian (dense_channel_norms(hessians=True))."""
    config = config.resolved()
    return HESSIAN in statistics_needed(config.method, config.base)


def predicted_masks(model, stats: ChannelNorms, config: PruneConfig) -> dict[tuple[int, str], torch.Tensor]:
    """The kept-weight mask (True = kept) of every prunable Linear that `config`'s method would choose from
    these statistics: the registry's own hooks, as the engine calls them (an allocator's per-block targets
    from a scan of these statistics, then the mask method's `prune` on each dense weight)."""
    config = config.resolved()
    if config.method not in predictable():
        raise ValueError(f"Masks are predicted for {', '.join(predictable())}, not {config.method}.")
    if stats.inputs is None:
        raise ValueError("These statistics were released: predict the masks before ChannelNorms.release().")
    if needs_hessians(config) and any(s.gram is None for s in stats.inputs.values()):
        raise ValueError(f"{config.method}'s predicted masks need the sets' Hessians: "
                         f"dense_channel_norms(hessians=True).")
    method, pruner = METHODS[config.method], mask_method(config.method, config.base)
    blocks = list(enumerate(decoder_blocks(model)))
    targets = [(config.sparsity, config.parsed_pattern)] * len(blocks)
    if method.allocate is not None:
        scan = ((prunable_modules(block), {name: stats.inputs[(index, name)] for name in prunable_modules(block)})
                for index, block in blocks)
        targets, _ = method.allocate(scan, config)
    masks = {}
    for (index, block), (sparsity, pattern) in zip(blocks, targets):
        for name, module in prunable_modules(block).items():
            pruned, _ = pruner.prune(weight_matrix(module), stats.inputs[(index, name)], sparsity, pattern, config)
            masks[(index, name)] = ~pruned.cpu()
    return masks


def packed_masks(model, stats: ChannelNorms, config: PruneConfig) -> dict[tuple[int, str], np.ndarray]:
    """`predicted_masks` as packed bits (an eighth of the memory): to compare one set's masks with many."""
    return {key: np.packbits(mask.numpy().ravel()) for key, mask in predicted_masks(model, stats, config).items()}


def packed_jaccard(a: dict[tuple[int, str], np.ndarray], b: dict[tuple[int, str], np.ndarray]) -> float:
    """|K_a & K_b| / |K_a | K_b| pooled over every module of two packed mask sets."""
    both = sum(int(np.bitwise_count(a[key] & b[key]).sum()) for key in a)
    either = sum(int(np.bitwise_count(a[key] | b[key]).sum()) for key in a)
    return both / either if either else 1.0
