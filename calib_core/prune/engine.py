"""The layer-wise sequential pruning engine (as in Wanda, SparseGPT, OWL and DSnoT).

Capture (capture.py) what decoder block 0 receives for every calibration sample (hidden states plus every
keyword input: masks, rotary embeddings, positions), then block by block: run the dense block with
hooks that accumulate per-Linear input statistics, prune its Linears with the chosen method, and
re-run the pruned block to produce the next block's inputs. Weights stay where they are loaded (CPU);
each block visits the compute device for its turn. The engine owns hooks, buffers, devices and
ordering; the methods only turn statistics and a weight into a mask (and SparseGPT's new weights).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from ..devices import resolve_device, synchronize
from ..errors import ConfigError, PruningCancelled
from ..models import decoder_blocks, is_quantized, prunable_modules, set_weight_matrix, weight_matrix
from .capture import BlockInputs, StatsHooks, block_forward, capture_block_inputs, walk_blocks
from .config import PruneConfig
from .events import AllocationEvent, BlockRecord, ModuleRecord, StageEvent
from .masks import row_chunks
from .memory import check_memory, estimate_memory
from .methods import HESSIAN, MEAN_VAR, METHODS, mask_method, statistics_needed


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class PruneResult:
    config: PruneConfig
    blocks: list[BlockRecord]
    overall_sparsity: float
    seconds: dict[str, float]
    allocation: AllocationEvent | None = None
    memory_estimate: dict | None = None
    method_details: dict | None = None  # which rule/variant ran, what DSnoT refined, OWL's achieved sparsity


class Pruner:
    """One run of one method over one model. Use `prune_model` unless you need the pieces."""

    def __init__(self, model, config: PruneConfig, on_event=None, cancel: CancelToken | None = None,
                 streamed=None, on_block_pruned: Callable | None = None, on_channels: Callable | None = None):
        """`streamed` (prune/streaming.StreamedModel of `model`): each block is read from disk for its
        turn and released after it; `on_block_pruned(index, tensors)` receives each pruned block's
        tensors first (to write them); `on_channels(index, arrays)` receives each block's per-channel input
        statistics ("{block}/{module}/{kind}" -> float32 array, kinds of prune/stats.CHANNEL_KINDS)."""
        self.model = model
        self.streamed, self.on_block_pruned, self.on_channels = streamed, on_block_pruned, on_channels
        self.cfg = config.resolved()
        self.emit = on_event or (lambda event: None)
        self.cancel = cancel
        self.device = resolve_device(self.cfg.device)
        self.blocks = decoder_blocks(model)
        self.method = METHODS[self.cfg.method]
        self.memo: dict = {}  # what the method's hooks keep over the run (and its details report)
        if is_quantized(model):
            raise ConfigError(
                "This model is loaded quantized (8-/4-bit). Pruning needs floating-point weights: "
                "load it in float32/bfloat16/float16."
            )

    # ------------------------------------------------------------ public
    def run(self, calibration: torch.Tensor | None) -> PruneResult:
        cfg = self.cfg
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        estimate = None
        if calibration is None and cfg.needs_calibration:
            raise ConfigError(f"{cfg.method} needs calibration data; only magnitude pruning runs without.")
        if calibration is not None:
            if calibration.dim() != 2 or calibration.numel() == 0:
                raise ConfigError("Calibration must be a non-empty [nsamples, seqlen] tensor of token ids.")
            self.memo["seqlen"] = int(calibration.shape[1])
            estimate = self.memory_estimate(*calibration.shape)
            check_memory(estimate, self.device)
        uniform = [(cfg.target_sparsity, cfg.parsed_pattern)] * len(self.blocks)
        targets, allocation = uniform, None
        with torch.inference_mode():
            if self.method.allocate is not None:
                t = time.perf_counter()
                targets, allocation = self.method.allocate(self._dense_scan(calibration), cfg)
                seconds["outlier_scan"] = time.perf_counter() - t
                self.emit(allocation)
            t = time.perf_counter()
            inputs = None
            if calibration is not None:
                with self._embeddings():
                    inputs = capture_block_inputs(self.model, calibration, cfg.batch_size, self.device)
                synchronize(self.device)  # CUDA runs asynchronously: time the work, not its launch
                self.emit(StageEvent("capture", 1, 1, time.perf_counter() - t))
            seconds["capture"] = time.perf_counter() - t
            t = time.perf_counter()
            records = self._prune_blocks(inputs, targets, allocation)
            seconds["prune"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - start
        zeros = sum(round(m.sparsity * m.shape[0] * m.shape[1]) for b in records for m in b.modules)
        total = sum(m.shape[0] * m.shape[1] for b in records for m in b.modules)
        overall = zeros / max(total, 1)
        return PruneResult(
            cfg, records, overall, seconds, allocation,
            estimate.as_dict() if estimate else None,
            self.method.details(cfg, self.memo, allocation, overall) if self.method.details else None,
        )

    def memory_estimate(self, nsamples: int, seqlen: int):
        needs = statistics_needed(self.cfg.method, self.cfg.base)
        return estimate_memory(self.model, nsamples, seqlen, needs, self.device, self.cfg.batch_size,
                               streaming=self.streamed is not None)

    # ------------------------------------------------------------ internals
    def _check_cancel(self):
        if self.cancel is not None and self.cancel.is_set():
            raise PruningCancelled("Pruning cancelled; the model is partially pruned and should be reloaded.")

    def _embeddings(self):
        """The input embedding in memory for the capture (a streamed model loads it just for that)."""
        return self.streamed.embeddings() if self.streamed is not None else contextlib.nullcontext()

    def _on_device(self, index: int, block):
        if self.streamed is not None:
            self.streamed.load_block(index, self.device)
        elif self.device.type != "cpu":
            block.to(self.device)

    def _off_device(self, index: int, block, pruned: bool = False):
        if self.streamed is not None:
            if pruned and self.on_block_pruned is not None:
                self.on_block_pruned(index, self.streamed.block_tensors(index))
            self.streamed.release_block(index)
        elif self.device.type != "cpu":
            block.to("cpu")

    def _return_freed_memory(self):
        """A streamed run holds little besides the block: heap holes left by the forward's activations or a
        module's temporaries would be a large part of its peak, so they go back to the system at once."""
        if self.streamed is not None:
            self.streamed.return_freed_memory()

    def _prune_blocks(self, inputs: BlockInputs | None, targets, allocation) -> list[BlockRecord]:
        cfg = self.cfg
        needs = statistics_needed(cfg.method, cfg.base)
        need_mean, need_hessian = MEAN_VAR in needs, HESSIAN in needs
        records: list[BlockRecord] = []
        done: dict = {}  # the block in hand: what its record needs once it is released

        def release(index: int, block) -> None:  # written out (a streamed run) and timed with it
            self._off_device(index, block, pruned=True)
            synchronize(self.device)
            t_block, sparsity, pattern, module_records = done.pop(index)
            record = BlockRecord(
                index=index, name=f"block {index}", target_sparsity=sparsity, pattern=str(pattern),
                sparsity=_weighted_sparsity(module_records),
                outlier_ratio=allocation.outlier_ratios[index] if allocation else None,
                seconds=time.perf_counter() - t_block, modules=module_records,
            )
            records.append(record)
            self.emit(record)
            self.emit(StageEvent("prune", index + 1, len(self.blocks), record.seconds))

        def load(index: int, block) -> None:
            self._check_cancel()
            done[index] = (time.perf_counter(),)
            self._on_device(index, block)

        self.emit(StageEvent("prune", 0, len(self.blocks), 0.0))
        for index, block, outputs in walk_blocks(self.blocks, inputs, load, release):
            modules = prunable_modules(block)
            hooks = None
            if inputs is not None:
                # Dense outputs are only needed when they, not the pruned ones, feed the next block.
                hooks = StatsHooks(modules, need_mean, need_hessian, cfg.recon_tokens,
                                    stop_early=cfg.propagate == "pruned")
                try:
                    block_forward(block, inputs, index, outputs)
                finally:
                    hooks.remove()
                self._return_freed_memory()  # the forward's activations
            sparsity, pattern = targets[index]
            module_records = []
            channels = {}
            for name, module in modules.items():
                self._check_cancel()
                stats, recon_x = _take_inputs(hooks, name)
                if stats is not None and self.on_channels is not None:  # before a method consumes them
                    channels.update({f"{index}/{name}/{kind}": values.numpy()
                                     for kind, values in stats.channel_summary().items()})
                module_records.append(self._prune_module(index, name, module, stats, recon_x, sparsity, pattern))
                del stats, recon_x  # the statistics are freed after their last module
                self._return_freed_memory()
                self.emit(module_records[-1])
            if channels:
                self.on_channels(index, channels)
            # The last block's outputs feed nothing we measure: skip its re-run.
            if inputs is not None and cfg.propagate == "pruned" and index < len(self.blocks) - 1:
                block_forward(block, inputs, index, outputs)
            done[index] += (sparsity, pattern, module_records)
        return records

    def _prune_module(self, index, name, module, stats, recon_x, sparsity, pattern) -> ModuleRecord:
        t = time.perf_counter()
        W = weight_matrix(module)
        x = dense_out = None
        if recon_x is not None:  # the dense outputs on the sample, not a copy of the weights: [tokens, out]
            x = recon_x.float()
            dense_out = _outputs(x, W)
        prune = mask_method(self.cfg.method, self.cfg.base).prune
        if self.method.refine is not None:
            mask, new_W = self.method.refine(name, W, stats, sparsity, pattern, self.cfg, self.memo, prune)
        else:
            mask, new_W = prune(W, stats, sparsity, pattern, self.cfg)
        if new_W is not None:
            set_weight_matrix(module, new_W)
        else:
            W.masked_fill_(mask, 0)  # not W[mask] = 0, which builds int64 indices of every pruned position
        del mask, new_W
        achieved = 1.0 - int(torch.count_nonzero(weight_matrix(module))) / W.numel()
        error = rel = None
        if x is not None:
            error, rel = _reconstruction_error(x, dense_out, weight_matrix(module), module.bias)
        return ModuleRecord(
            block=index, name=name, shape=list(W.shape), target_sparsity=sparsity, pattern=str(pattern),
            sparsity=achieved, recon_error=error, rel_recon_error=rel, seconds=time.perf_counter() - t,
        )

    def _dense_scan(self, calibration: torch.Tensor):
        """An allocator's pass over the dense model: each block's prunable modules and their input
        statistics (norms), in turn; the next block gets the dense outputs."""
        with self._embeddings():
            inputs = capture_block_inputs(self.model, calibration, self.cfg.batch_size, self.device)

        def load(index: int, block) -> None:
            self._check_cancel()
            self._on_device(index, block)

        def release(index: int, block) -> None:
            self._off_device(index, block)
            self.emit(StageEvent("outlier_scan", index + 1, len(self.blocks), 0.0))

        for index, block, outputs in walk_blocks(self.blocks, inputs, load, release):
            modules = prunable_modules(block)
            hooks = StatsHooks(modules, False, False, 0)
            try:
                block_forward(block, inputs, index, outputs)
            finally:
                hooks.remove()
            yield modules, hooks.stats


def _take_inputs(hooks: StatsHooks | None, name: str):
    """A module's statistics and reconstruction sample, removed from `hooks`: once the last module fed the
    same input has taken them, they are freed (and SparseGPT may factorize that Hessian in place)."""
    if hooks is None:
        return None, None
    stats = hooks.stats.pop(name, None)
    if stats is not None and not any(other is stats for other in hooks.stats.values()):
        stats.last_use()
    return stats, hooks.recon_x.pop(name, None)


def _outputs(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """X W^T in fp32, a few output rows of W at a time (no fp32 copy of the whole weight)."""
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32, device=x.device)
    for rows in row_chunks(*weight.shape):
        out[:, rows] = x @ weight[rows].float().t()
    return out


def _reconstruction_error(x: torch.Tensor, dense_out: torch.Tensor, pruned: torch.Tensor, bias) -> tuple:
    """||X W^T - X W'^T|| and that relative to the dense output ||X W^T + b||: products in fp32, a few
    output features at a time (squared norms add up over them), sums in fp64. `dense_out` is X W^T."""
    error_sq = dense_sq = 0.0
    for rows in row_chunks(*pruned.shape):
        error_sq += float((dense_out[:, rows] - x @ pruned[rows].float().t()).double().square().sum())
        dense = dense_out[:, rows] if bias is None else dense_out[:, rows] + bias[rows].float()
        dense_sq += float(dense.double().square().sum())
    error, denom = math.sqrt(error_sq), math.sqrt(dense_sq)
    return error, (error / denom if denom > 0 else None)


def _weighted_sparsity(records: list[ModuleRecord]) -> float:
    total = sum(r.shape[0] * r.shape[1] for r in records)
    return sum(r.sparsity * r.shape[0] * r.shape[1] for r in records) / max(total, 1)


def prune_model(
    model: nn.Module,
    calibration: torch.Tensor | None,
    config: PruneConfig,
    on_event: Callable | None = None,
    cancel: CancelToken | None = None,
) -> PruneResult:
    """Prune `model` in place. `calibration` is [nsamples, seqlen] token ids (None: magnitude only)."""
    return Pruner(model, config, on_event, cancel).run(calibration)
