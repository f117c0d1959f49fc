"""One command for a lent GPU: do our masks on CUDA equal the CPU's, and what does a prune cost there?

    python bench/gpu_check.py                          # on the GPU machine: under 8 minutes on one H200
    python bench/gpu_check.py --device cpu --quick     # the same flow on tiny models on a CPU (~1 min; tested)

It needs only torch, transformers, accelerate, safetensors, numpy and psutil (what the GPU machine's own
Python has): models are built from configs (no weights to carry, no bundled model, no UI), and the
user folders are temporary (no platformdirs). What it checks, in this order, each point written to
`--out DIR` (default `$OUT` when set, else bench/results/) as gpu_check.json and gpu_check.md as soon
as it is measured, so that a run cut short keeps what ran:

1. Masks, CUDA against the CPU, on the same token ids: tiny random Llama, Gemma 3, GPT-2 and OPT
   models, every method at 50% (and Wanda 2:4), in float32 and bfloat16. Tolerances (stated before the
   run, not fitted to it):
   - magnitude: identical masks (no inputs; the whole-matrix selection is made on the CPU);
   - Wanda, block 0 (its inputs are the embeddings, exact on both devices): identical masks in
     float32; the later blocks see inputs that CUDA kernels round differently in the last bits;
   - the whole model, mask positions agreeing: >= 0.9999 in float32 for Wanda, OWL and DSnoT (a
     flipped position needs two scores within float32 rounding of each other), >= 0.999 for SparseGPT
     (its column-by-column updates carry one rounding difference into later choices); bfloat16
     activations carry 8 mantissa bits, so >= 0.999 and >= 0.99 there.
2. Cost: a Llama-3-8B-shaped random model in bfloat16 (32 blocks, hidden 4096, MLP 14336, GQA 32/8,
   vocabulary 128256): one plain forward of the whole model on the GPU over 128 x 2048 tokens, then
   Wanda and SparseGPT at 50% on the same tokens (blocks visiting the GPU in turn), in memory; and
   Wanda streamed from disk on the first 4 blocks of the same shape, per block against in memory.
   Goal: Wanda under 2 minutes. `--quick` uses a 2-block model of width 256 and 8 x 64 tokens.

Exit status: 0 when every mask check holds, 1 when one fails, 2 when the device is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # first: it puts the repository on sys.path

from calib_core.prune.methods import METHODS

FAMILIES = ("llama", "gemma3_text", "gpt2", "opt")
SETTINGS = tuple((method, "0.5") for method in METHODS) + (("wanda", "2:4"),)  # every registry method
DTYPES = ("float32", "bfloat16")
# Whole-model agreement needed, by dtype; SparseGPT's sequential updates propagate a rounding difference.
NEEDED = {"float32": {"sparsegpt": 0.999, "default": 0.9999}, "bfloat16": {"sparsegpt": 0.99, "default": 0.999}}
LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=8192,
                rope_theta=500000.0, tie_word_embeddings=False)
QUICK_MODEL = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, tie_word_embeddings=False)
STREAMED_BLOCKS = 4


def masks_of(model) -> dict:
    import torch

    from calib_core.models import decoder_blocks, prunable_modules, weight_matrix

    return {(b, name): (weight_matrix(module) == 0).to("cpu", torch.bool)
            for b, block in enumerate(decoder_blocks(model)) for name, module in prunable_modules(block).items()}


def needed(method: str, dtype: str) -> float:
    return 1.0 if method == "magnitude" else NEEDED[dtype].get(method, NEEDED[dtype]["default"])


def mask_point(family: str, method: str, setting: str, dtype: str, device: str) -> dict:
    """One tiny model pruned on the CPU and on `device` from the same dense weights and token ids."""
    import torch

    from calib_core.models import DTYPES as TORCH_DTYPES
    from calib_core.prune import PruneConfig, prune_model
    from tests.tiny import random_ids, tiny_model

    ids = random_ids(8, 32, seed=1)
    dense = tiny_model(family, seed=3).to(TORCH_DTYPES[dtype]).state_dict()
    options = {"pattern": setting} if ":" in setting else {"sparsity": float(setting)}
    masks, seconds = [], []  # the CPU run, then the device's (a second CPU run with --device cpu)
    for where in ("cpu", device):
        model = tiny_model(family, seed=3).to(TORCH_DTYPES[dtype])
        model.load_state_dict(dense)
        t = time.perf_counter()
        prune_model(model, None if method == "magnitude" else ids, PruneConfig(method=method, device=where, **options))
        seconds.append(time.perf_counter() - t)
        masks.append(masks_of(model))
    cpu, other = masks
    same = sum(int((cpu[k] == other[k]).sum()) for k in cpu)
    total = sum(m.numel() for m in cpu.values())
    block0_identical = all(torch.equal(cpu[k], other[k]) for k in cpu if k[0] == 0)
    agreement = same / total
    need = needed(method, dtype)
    block0_needed = method == "magnitude" or (method == "wanda" and dtype == "float32")
    ok = agreement >= need and (block0_identical or not block0_needed)
    return {"check": "masks", "family": family, "method": method, "setting": setting, "dtype": dtype,
            "positions": total, "agreement": agreement, "needed": need, "block0_identical": block0_identical,
            "block0_needed": block0_needed, "cpu_s": seconds[0], "device_s": seconds[1], "ok": ok}


def build_shaped(shape: dict, device, layers: int | None = None):
    """A random Llama of `shape` in bfloat16, initialised on `device` (fast on a GPU), returned on the CPU
    where the engine keeps a model's weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **{**shape, **({"num_hidden_layers": layers} if layers else {})})
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.to("cpu").eval()


def plain_forward_s(model, ids, device, batch: int) -> float:
    """One forward of the whole model on `device` over `ids` (batch rows at a time), after a warm-up;
    logits for the last position only (a prune computes none)."""
    import torch

    from calib_core.devices import synchronize

    model.to(device)
    try:
        with torch.inference_mode():
            model(input_ids=ids[:1].to(device), use_cache=False)  # kernels, allocator
            synchronize(device)
            t = time.perf_counter()
            for rows in ids.split(batch):
                model(input_ids=rows.to(device), use_cache=False, logits_to_keep=1)
            synchronize(device)
            return time.perf_counter() - t
    finally:
        model.to("cpu")


def cost_points(device: str, quick: bool, report) -> None:
    """Wanda and SparseGPT on the 8B-shaped model against a plain forward; Wanda streamed per block."""
    import torch

    from calib_core.devices import resolve_device
    from calib_core.prune import PruneConfig, prune_model
    from calib_core.prune.config import GPU_BATCH_SIZE

    target = resolve_device(device)
    shape, (nsamples, seqlen) = (QUICK_MODEL, (8, 64)) if quick else (LLAMA_8B, (128, 2048))
    name = "random Llama, 2 blocks of width 256" if quick else "random Llama-3-8B shape"
    torch.manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (nsamples, seqlen))
    t = time.perf_counter()
    model = build_shaped(shape, target)
    built_s = time.perf_counter() - t
    batch = 1 if target.type == "cpu" else GPU_BATCH_SIZE
    forward = plain_forward_s(model, ids, target, batch)
    report.add({"check": "cost", "model": name, "what": "plain forward (whole model on the device)",
                "tokens": f"{nsamples} x {seqlen}", "seconds": forward, "ratio_to_forward": 1.0,
                "note": f"model built in {built_s:.0f} s"})
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("wanda", "sparsegpt"):
        model.load_state_dict(dense)
        t = time.perf_counter()
        result = prune_model(model, ids, PruneConfig(method=method, sparsity=0.5, device=device))
        seconds = time.perf_counter() - t
        per_block = sorted(b.seconds for b in result.blocks)[len(result.blocks) // 2]
        report.add({"check": "cost", "model": name, "what": f"{method} 50% in memory", "tokens": f"{nsamples} x {seqlen}",
                    "seconds": seconds, "ratio_to_forward": seconds / forward, "median_block_s": per_block,
                    "peak_cuda_gib": torch.cuda.max_memory_allocated(target) / 2**30 if target.type == "cuda" else None,
                    "note": "goal: under 120 s" if method == "wanda" and not quick else ""})
        if method == "wanda":
            report.add(streamed_point(shape, target, ids, per_block, name))
    del dense


def streamed_point(shape: dict, target, ids, in_memory_block_s: float, name: str) -> dict:
    """Wanda 50% with each block read from a saved folder for its turn (the first STREAMED_BLOCKS
    blocks of the shape: the per-block cost is what streaming changes)."""
    import torch

    from calib_core.prune import PruneConfig
    from calib_core.prune.engine import Pruner
    from calib_core.prune.streaming import StreamedModel

    layers = min(STREAMED_BLOCKS, shape["num_hidden_layers"])
    with tempfile.TemporaryDirectory() as folder:
        build_shaped(shape, target, layers).save_pretrained(folder)
        streamed = StreamedModel(folder, torch.bfloat16)
        t = time.perf_counter()
        result = Pruner(streamed.model, PruneConfig(method="wanda", sparsity=0.5, device=str(target)), streamed=streamed,
                        on_block_pruned=lambda index, tensors: None).run(ids)
        seconds = time.perf_counter() - t
    per_block = sorted(b.seconds for b in result.blocks)[len(result.blocks) // 2]
    return {"check": "cost", "model": f"{name}, first {layers} blocks", "what": "wanda 50% streamed from disk",
            "tokens": f"{ids.shape[0]} x {ids.shape[1]}", "seconds": seconds, "median_block_s": per_block,
            "ratio_to_forward": None, "note": f"median block {per_block:.2f} s against {in_memory_block_s:.2f} s in memory"}


class Report:
    """The rows so far, rewritten to DIR/gpu_check.{json,md} after each one."""

    def __init__(self, out: Path, device: str, quick: bool):
        import torch

        self.out, self.rows = out, []
        self.header = {"device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
                       "quick": quick, "torch": torch.__version__,
                       "transformers": __import__("transformers").__version__}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        (self.out / "gpu_check.json").write_text(json.dumps({**self.header, "rows": self.rows}, indent=2))
        (self.out / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        h = self.header
        lines = [f"Device: {h['device']}; torch {h['torch']}, transformers {h['transformers']}"
                 f"{'; --quick' if h['quick'] else ''}.", "",
                 "| family | method | dtype | agreement | needed | block 0 identical | CPU (s) | device (s) | ok |",
                 "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['family']} | {r['method']} {r['setting']} | {r['dtype']} | {r['agreement']:.6f} | {r['needed']} "
                  f"| {'yes' if r['block0_identical'] else 'no'}{' (needed)' if r['block0_needed'] else ''} "
                  f"| {r['cpu_s']:.2f} | {r['device_s']:.2f} | {'yes' if r['ok'] else 'NO'} |"
                  for r in self.rows if r["check"] == "masks"]
        costs = [r for r in self.rows if r["check"] == "cost"]
        if costs:
            lines += ["", "| model | what | tokens | seconds | ratio to a plain forward | note |", "|---|---|---|---|---|---|"]
            for r in costs:
                ratio = "" if r["ratio_to_forward"] is None else f"{r['ratio_to_forward']:.1f}"
                lines.append(f"| {r['model']} | {r['what']} | {r['tokens']} | {r['seconds']:.1f} | {ratio} | {r['note']} |")
        return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the flow on the CPU, for tests)")
    parser.add_argument("--quick", action="store_true", help="tiny models only (the flow in a minute or two)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "results"), metavar="DIR")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch sees none), so there is nothing to check. "
              "Run it where a GPU is available, or use --device cpu --quick for the flow.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:  # no user folders, no platformdirs
        os.environ.setdefault("CALIB_LAB_DATA", str(Path(scratch) / "data"))
        os.environ.setdefault("CALIB_LAB_CACHE", str(Path(scratch) / "cache"))
        from calib_core.devices import resolve_device

        device = str(resolve_device(args.device))
        report = Report(Path(args.out), device, args.quick)
        for dtype in DTYPES:
            for family in FAMILIES:
                for method, setting in SETTINGS:
                    report.add(mask_point(family, method, setting, dtype, device))
        cost_points(device, args.quick, report)
    failed = [r for r in report.rows if r["check"] == "masks" and not r["ok"]]
    for r in failed:
        print(f"gpu_check: {r['family']} {r['method']} {r['setting']} {r['dtype']}: agreement {r['agreement']:.6f} "
              f"(needed {r['needed']}), block 0 identical: {r['block0_identical']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
