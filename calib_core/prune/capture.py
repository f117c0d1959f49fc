"""How activations reach the methods: capture what decoder block 0 receives for every calibration
sample (hidden states plus every keyword input: masks, rotary embeddings, positions), run a block on
those inputs, and hook its Linears to accumulate their input statistics. The engine decides the
order; this module only moves data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..models import decoder_blocks
from .stats import InputStats


@dataclass
class BlockInputs:
    """Inputs of every block for every calibration chunk. `hidden` is the running buffer."""

    hidden: torch.Tensor  # [nsamples, seqlen, hidden] on the compute device
    chunks: list[slice]
    extra: list[list[tuple[tuple, dict]]]  # [block][chunk] -> (positional args after hidden, kwargs)


class _StopCapture(Exception):
    pass


class _InputRecorder(nn.Module):
    """Stands in for a decoder block during capture: records its inputs and passes hidden through."""

    def __init__(self, index: int, sink: Callable, last: bool):
        super().__init__()
        self.index, self.sink, self.last = index, sink, last

    def forward(self, hidden_states, *args, **kwargs):
        self.sink(self.index, hidden_states, args, kwargs)
        if self.last:
            raise _StopCapture
        return hidden_states


def _to_device(obj, device, moved: dict):
    if isinstance(obj, torch.Tensor):
        if id(obj) not in moved:  # shared tensors (one mask for all blocks) stay shared
            moved[id(obj)] = obj.to(device)
        return moved[id(obj)]
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device, moved) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device, moved) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device, moved) for k, v in obj.items()}
    return obj


def capture_block_inputs(model: nn.Module, ids: torch.Tensor, batch_size: int, device: torch.device) -> BlockInputs:
    """Run the model's embedding stage only: every block is swapped for a recorder, so the cost is
    the embeddings and mask/rotary set-up, not a forward pass."""
    blocks = decoder_blocks(model)
    n = ids.shape[0]
    chunks = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    extra = [[None] * len(chunks) for _ in blocks]
    state = {"hidden": None, "chunk": 0, "moved": {}}
    embed_device = next(model.parameters()).device

    def sink(index, hidden, args, kwargs):
        c = state["chunk"]
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value")}
        extra[index][c] = (_to_device(args, device, state["moved"]), _to_device(kwargs, device, state["moved"]))
        if index == 0:
            if state["hidden"] is None:
                state["hidden"] = torch.empty((n,) + tuple(hidden.shape[1:]), dtype=hidden.dtype, device=device)
            state["hidden"][chunks[c]] = hidden.to(device)

    originals = list(blocks)
    try:
        for i in range(len(blocks)):
            blocks[i] = _InputRecorder(i, sink, last=i == len(blocks) - 1)
        for c, chunk in enumerate(chunks):
            state["chunk"], state["moved"] = c, {}
            try:
                model(input_ids=ids[chunk].to(embed_device), use_cache=False)
            except _StopCapture:
                pass
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
    return BlockInputs(state["hidden"], chunks, extra)


def walk_blocks(blocks, inputs: BlockInputs | None, load: Callable, release: Callable):
    """The decoder blocks in turn, each fed the previous one's outputs: the pruning loop, an allocator's
    dense scan and the block-by-block perplexity all walk this way. For each block: `load(index, block)`
    (onto the compute device, or read from disk), then the caller's work while this generator waits at
    `(index, block, outputs)` (typically `block_forward` into `outputs`), then the outputs become the next
    block's inputs and `release(index, block)`. Without inputs (magnitude: no calibration) blocks are
    only loaded and released. A caller that raises stops the walk there, its block not released: a
    streamed run's release writes the block, which a failed block must not be."""
    outputs = torch.empty_like(inputs.hidden) if inputs is not None else None
    for index, block in enumerate(blocks):
        load(index, block)
        yield index, block, outputs
        if inputs is not None:
            inputs.hidden, outputs = outputs, inputs.hidden
        release(index, block)


class _StopBlock(Exception):
    """Raised by a statistics hook once the block's last prunable Linear has seen its input."""


def block_forward(block: nn.Module, inputs: BlockInputs, index: int, out: torch.Tensor | None) -> None:
    """Run one block over all chunks. A chunk cut short by _StopBlock leaves its rows of `out` unset."""
    for c, chunk in enumerate(inputs.chunks):
        args, kwargs = inputs.extra[index][c]
        try:
            result = block(inputs.hidden[chunk], *args, **kwargs)
        except _StopBlock:
            continue
        out[chunk] = result[0] if isinstance(result, tuple) else result


class StatsHooks:
    """Forward pre-hooks that feed each prunable module's input into InputStats and keep the first
    `recon_tokens` input rows for the reconstruction error.

    Linears fed the very same tensor (q/k/v, gate/up) share one statistics object, so a Hessian is
    computed once, not three times. With `stop_early`, once the first chunk has shown the call
    order, later chunks stop right before the last Linear runs: when the dense outputs are not
    propagated, nothing after that input is needed, which saves that Linear and the residual add.
    """

    def __init__(self, modules: dict[str, nn.Module], with_mean: bool, with_hessian: bool,
                 recon_tokens: int, stop_early: bool = False):
        self.stats: dict[str, InputStats] = {}
        self.recon_x: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self._last: tuple[torch.Tensor | None, str | None] = (None, None)
        self._recon_tokens = recon_tokens
        self._flags = (with_mean, with_hessian)
        self._stop_early = stop_early
        self._calls = 0
        self._handles = [
            module.register_forward_pre_hook(self._hook(name)) for name, module in modules.items()
        ]
        self._count = len(modules)

    def _hook(self, name: str):
        def hook(module, inputs):
            x = inputs[0]
            last_x, last_name = self._last
            if x is last_x:
                self.stats[name] = self.stats[last_name]
            else:
                if name not in self.stats:
                    self.stats[name] = InputStats(x.shape[-1], x.device, *self._flags)
                self.stats[name].add(x, samples=x.shape[0] if x.dim() == 3 else 1)
                self._last = (x, name)
            self._keep_recon_sample(name, x)
            self._calls += 1
            if self._calls <= self._count:
                self.order.append(name)
            elif self._stop_early and name == self.order[-1]:
                self._last = (None, None)
                raise _StopBlock

        return hook

    def _keep_recon_sample(self, name, x):
        have = self.recon_x[name].shape[0] if name in self.recon_x else 0
        take = self._recon_tokens - have
        if take <= 0:
            return
        x = x.reshape(-1, x.shape[-1])[:take]
        self.recon_x[name] = x.clone() if have == 0 else torch.cat([self.recon_x[name], x])

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._last = (None, None)
