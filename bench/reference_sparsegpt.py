"""Baseline for the SparseGPT speed claim of issue #2: the original implementation's flow, written plainly.

This follows the procedure of the SparseGPT / Wanda reference code (not its text): catch the inputs
of block 0, then for every block hook *all* its Linears at once, run the block sample by sample
(batch 1) to accumulate fp32 Hessians, prune each Linear with the column-by-column OBS loop
(blocksize 128, damping 1%), and run the block again to produce the next block's inputs. Timed in
one process against a plain full-model forward over the same tokens, like bench/engine_bench.py.

    .venv/bin/python bench/reference_sparsegpt.py 0.5
    .venv/bin/python bench/reference_sparsegpt.py 2:4
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch
from engine_bench import CALIB, EVAL, plain_forward  # the sibling script
from torch import nn

from calib_core.data.sources import build_calibration
from calib_core.metrics.perplexity import perplexity
from calib_core.models import load_model


class _Caught(Exception):
    pass


def _first_block_inputs(model, ids):
    layers = model.model.layers
    inputs, kwargs = [], {}

    def catch(_module, args, kw):
        inputs.append(args[0] if args else kw.pop("hidden_states"))
        kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Caught

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    for row in ids.split(1):
        try:
            model(input_ids=row, use_cache=False)
        except _Caught:
            pass
    handle.remove()
    return inputs, kwargs


def _obs_prune(W, H, sparsity, prune_n, prune_m, blocksize=128, percdamp=0.01):
    W = W.clone().float()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prune_n == 0:
            tmp = W1**2 / torch.diag(Hinv1).reshape((1, -1)) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prune_n != 0 and i % prune_m == 0:
                tmp = W1[:, i : i + prune_m] ** 2 / torch.diag(Hinv1)[i : i + prune_m].reshape((1, -1)) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def _block_out(out):
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def prune_reference(model, ids, sparsity, prune_n, prune_m):
    inputs, kwargs = _first_block_inputs(model, ids)
    for layer in model.model.layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        hessians = {n: torch.zeros(m.in_features, m.in_features) for n, m in linears.items()}
        counts = dict.fromkeys(linears, 0)

        def add_batch(name):
            def hook(_module, args, _out):
                x = args[0].reshape(-1, args[0].shape[-1]).float()
                n = counts[name]
                hessians[name] *= n / (n + 1)
                counts[name] = n + 1
                x = (2 / counts[name]) ** 0.5 * x
                hessians[name] += x.t() @ x

            return hook

        handles = [m.register_forward_hook(add_batch(n)) for n, m in linears.items()]
        for x in inputs:
            layer(x, **kwargs)
        for h in handles:
            h.remove()
        for name, module in linears.items():
            module.weight.data = _obs_prune(module.weight.data, hessians[name], sparsity, prune_n, prune_m).to(
                module.weight.dtype)
        inputs = [_block_out(layer(x, **kwargs)) for x in inputs]


def main():
    setting = sys.argv[1]
    torch.set_num_threads(2)
    lm = load_model("smollm2-135m")
    calib = build_calibration(CALIB["spec"], lm.tokenizer, CALIB["nsamples"], CALIB["seqlen"], CALIB["seed"])
    n, m = (int(v) for v in setting.split(":")) if ":" in setting else (0, 0)
    sparsity = 0.5 if ":" in setting else float(setting)
    before = plain_forward(lm.model, calib.input_ids)
    t = time.perf_counter()
    prune_reference(lm.model, calib.input_ids, sparsity, n, m)
    prune_seconds = time.perf_counter() - t
    after = plain_forward(lm.model, calib.input_ids)
    ppl = perplexity(lm.model, lm.tokenizer, EVAL["spec"], seqlen=EVAL["seqlen"], max_windows=EVAL["max_windows"])
    forward = (before + after) / 2
    print(json.dumps({"method": "sparsegpt (reference flow)", "setting": setting, "prune_seconds": prune_seconds,
                      "forward_seconds": forward, "cost_ratio": prune_seconds / forward, "ppl": ppl.ppl,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))


if __name__ == "__main__":
    main()
