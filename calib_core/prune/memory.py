"""How much memory a pruning run needs, by component, and whether the device has it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InsufficientMemoryError
from ..models import decoder_blocks, hidden_size, prunable_modules, weight_matrix
from .methods import HESSIAN


@dataclass
class MemoryEstimate:
    """Bytes needed by a pruning run, by component; `total` is what must be available."""

    weights: int
    calibration_buffers: int
    block_activations: int
    method_statistics: int
    device: str

    @property
    def total(self) -> int:
        return self.weights + self.calibration_buffers + self.block_activations + self.method_statistics

    def as_dict(self) -> dict:
        return {
            "weights_bytes": self.weights,
            "calibration_buffers_bytes": self.calibration_buffers,
            "block_activations_bytes": self.block_activations,
            "method_statistics_bytes": self.method_statistics,
            "total_bytes": self.total,
            "device": self.device,
        }

    def describe(self) -> str:
        gib = 1024**3
        return (
            f"weights {self.weights / gib:.2f} GiB + calibration buffers "
            f"{self.calibration_buffers / gib:.2f} GiB + block activations "
            f"{self.block_activations / gib:.2f} GiB + method statistics "
            f"{self.method_statistics / gib:.2f} GiB = {self.total / gib:.2f} GiB on {self.device}"
        )


def estimate_memory(
    model: nn.Module, nsamples: int, seqlen: int, needs: frozenset[str], device: torch.device, batch_size: int = 8,
    streaming: bool = False,
) -> MemoryEstimate:
    """Rough upper estimate of a run's memory on `device` (CPU: weights included); `needs` are the
    statistics the method collects (methods.statistics_needed). `streaming`: only one block's weights
    are in memory at a time, besides the embeddings, norms and head (prune/streaming.py)."""
    blocks = decoder_blocks(model)
    dtype_bytes = next(model.parameters()).element_size()
    hidden = hidden_size(model)
    block_params = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    modules = prunable_modules(blocks[0])
    widest = max(weight_matrix(m).shape[0] for m in modules.values())
    if streaming:
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        outside = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in in_blocks)
        weights = block_params * dtype_bytes + (outside if device.type == "cpu" else 0)
    elif device.type == "cpu":
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
    else:  # only one block lives on the accelerator at a time
        weights = block_params * dtype_bytes
    buffers = 2 * nsamples * seqlen * hidden * dtype_bytes  # block inputs and outputs
    batch = min(batch_size, nsamples)
    heads = getattr(model.config, "num_attention_heads", None) or getattr(model.config, "n_head", 1)
    # MLP intermediate, attention scores and the captured reconstruction inputs of one chunk.
    activations = batch * seqlen * (4 * widest + heads * seqlen) * 4
    per_module = 0
    for module in modules.values():
        out_f, in_f = weight_matrix(module).shape
        per_module += 4 * (in_f * 4 + out_f * in_f * 2)  # fp32 stats vectors, scores and mask
        if HESSIAN in needs:
            per_module += 4 * in_f * in_f * 2  # Hessian and its inverse factor
    return MemoryEstimate(weights, buffers, activations, per_module, str(device))


def available_memory(device: torch.device) -> int:
    """What a run can still allocate on `device` (on CUDA our own allocator's unused cache counts as free)."""
    from ..devices import free_bytes

    return free_bytes(device)


def check_memory(estimate: MemoryEstimate, device: torch.device) -> None:
    available = available_memory(device)
    if device.type == "cpu":
        # The model is already in RAM when we check, so its weights are not "new" memory.
        needed = estimate.total - estimate.weights
    else:
        needed = estimate.total
    if needed > available:
        raise InsufficientMemoryError(
            f"Not enough memory for this run: it needs about {estimate.describe()}, but only "
            f"{available / 1024**3:.2f} GiB is available on {device}. Reduce nsamples or seqlen."
        )
