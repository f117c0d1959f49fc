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
from functools import partial
from typing import Callable, Protocol

import torch
from torch import nn

from ..errors import ConfigError, PruningCancelled
from ..devices import resolve_device, synchronize
from ..models import decoder_blocks, is_quantized, prunable_modules, set_weight_matrix, weight_matrix
from .capture import BlockInputs, StatsHooks, block_forward, capture_block_inputs
from .config import PruneConfig
from .dsnot import dsnot_refine
from .events import AllocationEvent, BlockRecord, ModuleRecord, StageEvent
from .masks import mask_from_scores, row_chunks
from .memory import check_memory, estimate_memory
from .methods import HESSIAN, MEAN_VAR, mask_method, statistics_needed
from .owl import outlier_ratio, owl_nm_allocation, owl_sparsities
from .sparsegpt import sparsegpt_static_scores
from .wanda import wanda_scores


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


def _is_attention(name: str) -> bool:
    return "attn" in name or "attention" in name


class Pruner:
    """One run of one method over one model. Use `prune_model` unless you need the pieces."""

    def __init__(self, model, config: PruneConfig, on_event=None, cancel: CancelToken | None = None,
                 streamed=None, on_block_pruned: Callable | None = None):
        """`streamed` (prune/streaming.StreamedModel of `model`): each block is read from disk for its
        turn and released after it; `on_block_pruned(index, tensors)` receives each pruned block's
        tensors first (to write them)."""
        self.model = model
        self.streamed, self.on_block_pruned = streamed, on_block_pruned
        self.cfg = config.resolved()
        self.emit = on_event or (lambda event: None)
        self.cancel = cancel
        self.device = resolve_device(self.cfg.device)
        self.blocks = decoder_blocks(model)
        self._dsnot_refined: set[str] = set()
        self._dsnot_skipped: set[str] = set()
        self._seqlen: int | None = None
        self._dsnot_threshold = self.cfg.dsnot_threshold
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
            self._seqlen = int(calibration.shape[1])
            if cfg.dsnot_threshold_scale == "seqlen":  # the authors' 0.1 was set for 2048-token sequences
                self._dsnot_threshold = cfg.dsnot_threshold * self._seqlen / 2048
            estimate = self.memory_estimate(*calibration.shape)
            check_memory(estimate, self.device)
        uniform = [(cfg.target_sparsity, cfg.parsed_pattern)] * len(self.blocks)
        targets, allocation = uniform, None
        with torch.inference_mode():
            if cfg.method == "owl":
                t = time.perf_counter()
                targets, allocation = self._owl_allocation(calibration)
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
            estimate.as_dict() if estimate else None, self._method_details(allocation, overall),
        )

    def _method_details(self, allocation, overall: float) -> dict | None:
        cfg = self.cfg
        if cfg.method == "dsnot":
            details = {
                "rule": cfg.dsnot_rule, "sublayers": cfg.dsnot_sublayers,
                "refined_modules": sorted(self._dsnot_refined), "initial_mask_only": sorted(self._dsnot_skipped),
                "threshold": cfg.dsnot_threshold, "threshold_scale": cfg.dsnot_threshold_scale,
                "effective_threshold": self._dsnot_threshold, "seqlen": self._seqlen,
                "variance": "within-sequence variance, pooled over sequences with token weights",
            }
            if cfg.base == "sparsegpt":
                details["sparsegpt_init"] = cfg.dsnot_sparsegpt_init
            return {"dsnot": details}
        if cfg.method == "owl":
            details = {"m": cfg.owl_m, "lambda": cfg.owl_lambda, "target_sparsity": cfg.target_sparsity,
                       "planned_sparsity": allocation.planned_sparsity if allocation else None,
                       "achieved_sparsity": overall}
            if cfg.parsed_pattern.is_nm:
                details["nm_rule"] = cfg.owl_nm_rule
                if cfg.base != "wanda":
                    details["extension"] = (f"mixed N:M on a {cfg.base} base is a Calibration Lab extension: "
                                            "the OWL authors mix N only for Wanda")
            return {"owl": details}
        return None

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
        outputs = torch.empty_like(inputs.hidden) if inputs is not None else None
        records = []
        self.emit(StageEvent("prune", 0, len(self.blocks), 0.0))
        for index, block in enumerate(self.blocks):
            t_block = time.perf_counter()
            self._check_cancel()
            self._on_device(index, block)
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
            for name, module in modules.items():
                self._check_cancel()
                stats, recon_x = _take_inputs(hooks, name)
                module_records.append(self._prune_module(index, name, module, stats, recon_x, sparsity, pattern))
                del stats, recon_x  # the statistics are freed after their last module
                self._return_freed_memory()
                self.emit(module_records[-1])
            if inputs is not None:
                # The last block's outputs feed nothing we measure: skip its re-run.
                if cfg.propagate == "pruned" and index < len(self.blocks) - 1:
                    block_forward(block, inputs, index, outputs)
                inputs.hidden, outputs = outputs, inputs.hidden
            self._off_device(index, block, pruned=True)
            synchronize(self.device)
            record = BlockRecord(
                index=index,
                name=f"block {index}",
                target_sparsity=sparsity,
                pattern=str(pattern),
                sparsity=_weighted_sparsity(module_records),
                outlier_ratio=allocation.outlier_ratios[index] if allocation else None,
                seconds=time.perf_counter() - t_block,
                modules=module_records,
            )
            records.append(record)
            self.emit(record)
            self.emit(StageEvent("prune", index + 1, len(self.blocks), record.seconds))
        return records

    def _prune_module(self, index, name, module, stats, recon_x, sparsity, pattern) -> ModuleRecord:
        t = time.perf_counter()
        W = weight_matrix(module)
        x = dense_out = None
        if recon_x is not None:  # the dense outputs on the sample, not a copy of the weights: [tokens, out]
            x = recon_x.float()
            dense_out = _outputs(x, W)
        if self.cfg.method == "dsnot":
            mask, new_W = self._dsnot_prune(name, W, stats, sparsity, pattern)
        else:
            mask, new_W = mask_method(self.cfg.method, self.cfg.base).prune(W, stats, sparsity, pattern, self.cfg)
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

    def _dsnot_prune(self, name, W, stats, sparsity, pattern) -> tuple[torch.Tensor, torch.Tensor | None]:
        """DSnoT: its base's initial mask, refined where the sublayer rule applies. A module it does not
        refine on the "full" SparseGPT start is pruned by SparseGPT itself, weight update included."""
        cfg = self.cfg
        refine = self._dsnot_applies(name)
        (self._dsnot_refined if refine else self._dsnot_skipped).add(name)
        initial_metric = None
        if cfg.base == "sparsegpt" and cfg.dsnot_sparsegpt_init == "static":
            # The DSnoT authors' SparseGPT base: the static saliency per row, weights unchanged.
            initial_metric = sparsegpt_static_scores(W, stats.hessian(), cfg.sparsegpt_damp, overwrite_hessian=True)
            mask = mask_from_scores(initial_metric, sparsity, pattern, per_row=True)
        elif cfg.base == "sparsegpt" and not refine:
            return mask_method("sparsegpt").prune(W, stats, sparsity, pattern, cfg)
        else:
            # Wanda, or our "full" variant: DSnoT refines a whole SparseGPT pass's mask over the original weights.
            mask = mask_method("dsnot", cfg.base).prune(W, stats, sparsity, pattern, cfg)[0]
        if refine:
            mask = dsnot_refine(W, mask, stats, pattern, self._dsnot_threshold, cfg.dsnot_cycles,
                                cfg.dsnot_var_power, cfg.dsnot_rule, initial_metric)
        return mask, None

    def _dsnot_applies(self, name: str) -> bool:
        which = self.cfg.dsnot_sublayers
        if which == "skip-mlp":  # the authors' name test: the first name part is not "mlp"
            return name.split(".")[0] != "mlp"
        return which == "all" or (which == "attention") == _is_attention(name)

    def _owl_allocation(self, calibration: torch.Tensor):
        """Pass 1 on the dense model: outlier ratio of each block's Wanda scores."""
        cfg = self.cfg
        with self._embeddings():
            inputs = capture_block_inputs(self.model, calibration, cfg.batch_size, self.device)
        outputs = torch.empty_like(inputs.hidden)
        ratios = []
        for index, block in enumerate(self.blocks):
            self._check_cancel()
            self._on_device(index, block)
            modules = prunable_modules(block)
            hooks = StatsHooks(modules, False, False, 0)
            try:
                block_forward(block, inputs, index, outputs)
            finally:
                hooks.remove()
            ratios.append(outlier_ratio(partial(_wanda_score_pieces, modules, hooks.stats), cfg.owl_m))
            inputs.hidden, outputs = outputs, inputs.hidden
            self._off_device(index, block)
            self.emit(StageEvent("outlier_scan", index + 1, len(self.blocks), 0.0))
        pattern = cfg.parsed_pattern
        if pattern.is_nm:
            patterns = owl_nm_allocation(ratios, pattern, cfg.owl_lambda, cfg.owl_nm_rule)
            targets = [(p.sparsity, p) for p in patterns]
        else:
            targets = [(s, pattern) for s in owl_sparsities(ratios, cfg.sparsity, cfg.owl_lambda)]
        sparsities = [s for s, _ in targets]
        allocation = AllocationEvent(ratios, sparsities, [str(p) for _, p in targets],
                                     sum(sparsities) / len(sparsities))
        return targets, allocation


def _wanda_score_pieces(modules: dict, stats: dict):
    """A block's Wanda scores, a few rows of one Linear at a time."""
    for name, module in modules.items():
        weight = weight_matrix(module)
        for rows in row_chunks(*weight.shape):
            yield wanda_scores(weight[rows], stats[name])


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
