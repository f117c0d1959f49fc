"""One command for a lent GPU: prune the bundled model on CUDA with Wanda, SparseGPT, OWL and DSnoT,
compare each mask with a CPU run on the same calibration tokens (Wanda must be identical, the others
agree on >= 99% of positions), and time each prune against one plain forward over the same tokens on
the GPU. Prints one table and writes bench/results/gpu_check.{json,md}; under 8 minutes on one GPU.

    .venv/bin/python bench/gpu_check.py

Then the streaming mode on CUDA: Wanda 50% of the ~1.5B random Llama of bench/streaming_bench.py (made
once, bf16 shards), each block read from disk for its turn, with its time and peak RSS.

Without CUDA it says so and exits with status 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "gpu_check"
METHODS = ("wanda", "sparsegpt", "owl", "dsnot")
CALIB = dict(nsamples=32, seqlen=512, seed=0)
MIN_AGREEMENT = {"wanda": 1.0}  # the others: 0.99


def masks_of(model) -> dict:
    import torch

    from calib_core.models import decoder_blocks, prunable_modules, weight_matrix

    return {f"{b}.{name}": (weight_matrix(module) == 0).to("cpu", torch.bool)
            for b, block in enumerate(decoder_blocks(model)) for name, module in prunable_modules(block).items()}


def plain_forward(model, ids, device) -> float:
    import torch

    with torch.inference_mode():
        model(input_ids=ids[:1].to(device), use_cache=False)  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        t = time.perf_counter()
        for row in ids.split(1):
            model(input_ids=row.to(device), use_cache=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t


def streamed_point() -> dict:
    """The streamed prune of the 1.5B random model on CUDA, in its own process (its own peak RSS)."""
    import os
    import subprocess
    import tempfile

    from bench.streaming_bench import random_model, weight_bytes
    from calib_core.paths import cache_dir

    folder = random_model("llama-1.5b", cache_dir() / "bench-models")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([sys.executable, "-m", "calib_core", "prune", "--model", str(folder), "--dtype", "bfloat16",
                        "--device", "cuda", "--stream", "--method", "wanda", "--sparsity", "0.5", "--nsamples", "16",
                        "--seqlen", "512", "--eval-windows", "2", "--report", str(report)], check=True, cwd=ROOT,
                       env=dict(os.environ, CALIB_LAB_DATA=str(Path(scratch) / "data")))
        record = json.loads(report.read_text())
    weights = weight_bytes(folder)
    return {"model": "llama-1.5b (random)", "weights_gib": weights / 2**30,
            "prune_s": record["timings"]["prune_total"], "eval_s": record["timings"]["eval"],
            "peak_rss_gib": record["memory"]["peak_rss_bytes"] / 2**30,
            "rss_to_weights": record["memory"]["peak_rss_bytes"] / weights}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch sees none), so there is nothing to check. "
              "Run it where a GPU is available.", file=sys.stderr)
        return 2
    from calib_core.data.sources import build_calibration
    from calib_core.models import load_model
    from calib_core.prune import PruneConfig, prune_model

    torch.manual_seed(0)
    gpu = torch.device("cuda")
    loaded = load_model()
    ids = build_calibration("builtin:wiki", loaded.tokenizer, **CALIB).input_ids
    forward = plain_forward(loaded.model.to(gpu), ids, gpu)
    rows = []
    for method in METHODS:
        runs = {}
        for device in ("cpu", "cuda"):
            model = load_model().model
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            prune_model(model, ids, PruneConfig(method=method, sparsity=0.5, device=device))
            if device == "cuda":
                torch.cuda.synchronize()
            runs[device] = (time.perf_counter() - t, masks_of(model))
        cpu_masks, gpu_masks = runs["cpu"][1], runs["cuda"][1]
        same = sum(int((cpu_masks[k] == gpu_masks[k]).sum()) for k in cpu_masks)
        total = sum(m.numel() for m in cpu_masks.values())
        agreement = same / total
        needed = MIN_AGREEMENT.get(method, 0.99)
        rows.append({"method": method, "cpu_s": runs["cpu"][0], "gpu_s": runs["cuda"][0], "forward_gpu_s": forward,
                     "cost_ratio_gpu": runs["cuda"][0] / forward, "mask_agreement": agreement,
                     "needed": needed, "ok": agreement >= needed})
        print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    streamed = streamed_point()
    OUT.with_suffix(".json").write_text(json.dumps({"device": torch.cuda.get_device_name(0), "calibration": CALIB,
                                                    "rows": rows, "streamed": streamed}, indent=2))
    lines = [f"GPU: {torch.cuda.get_device_name(0)}; calibration {CALIB['nsamples']} x {CALIB['seqlen']} tokens of "
             f"builtin:wiki; plain forward over them on the GPU: {forward:.2f} s.", "",
             "| method 50% | CPU prune (s) | GPU prune (s) | GPU cost ratio (prune / forward) | mask agreement CPU vs GPU "
             "| needed | ok |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['cpu_s']:.1f} | {r['gpu_s']:.1f} | {r['cost_ratio_gpu']:.2f} | "
              f"{r['mask_agreement']:.5f} | {r['needed']:.2f} | {'yes' if r['ok'] else 'NO'} |" for r in rows]
    lines += ["", f"Streaming, Wanda 50% of {streamed['model']} ({streamed['weights_gib']:.2f} GiB bf16) on CUDA: prune "
                  f"{streamed['prune_s']:.1f} s, eval {streamed['eval_s']:.1f} s, peak RSS {streamed['peak_rss_gib']:.2f} GiB "
                  f"({streamed['rss_to_weights']:.0%} of the weights)."]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
