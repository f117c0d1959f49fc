"""Streaming (models larger than memory): Wanda and SparseGPT at 50% on 16 x 512 tokens of builtin:wiki,
in bfloat16, each decoder block read from disk for its turn (`--stream`) against the same prune with the
whole model in memory: peak RSS against the model's weight bytes, and wall time. Models: the bundled
135M, and random-weight Llama models of about 0.5B and 1.5B parameters built from configs and saved
once as bf16 safetensors shards (with the bundled tokenizer's vocabulary). Every point is its own CLI
process (its own peak RSS).

    .venv/bin/python bench/streaming_bench.py                  # about 25 min on 2 CPUs
    .venv/bin/python bench/streaming_bench.py --streamed-only  # redo the streamed rows (~10 min), keep the others

Target: streaming peak RSS at most 35% of the weight bytes on the 1.5B model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_results  # first: it puts the repository on sys.path

OUT = ROOT / "bench" / "results" / "streaming_bench"
RANDOM_MODELS = {  # Llama layouts; untied head
    "llama-0.5b": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=32, num_attention_heads=16,
                       num_key_value_heads=16),
    "llama-1.5b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=25, num_attention_heads=16,
                       num_key_value_heads=16),
}
METHODS = ("wanda", "sparsegpt")


def random_model(name: str, folder: Path) -> Path:
    """A random-weight Llama saved as bf16 shards, made once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from calib_core import assets

    target = folder / name
    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(assets.bundled_model_dir())
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), tie_word_embeddings=False,
                                  max_position_embeddings=2048, **RANDOM_MODELS[name])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target, max_shard_size="500MB")
    tokenizer.save_pretrained(target)
    return target


def weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def one_point(model: str, method: str, stream: bool, env: dict, scratch: Path) -> dict:
    report = scratch / "report.json"
    command = [sys.executable, "-m", "calib_core", "prune", "--model", model, "--dtype", "bfloat16", "--method", method,
               "--sparsity", "0.5", "--calib", "builtin:wiki", "--nsamples", "16", "--seqlen", "512",
               "--eval", "builtin:wiki", "--eval-windows", "2", "--report", str(report)]
    subprocess.run(command + (["--stream"] if stream else []), check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = json.loads(report.read_text())
    return {"prune_s": record["timings"]["prune_total"], "eval_s": record["timings"]["eval"],
            "load_s": record["timings"]["load_model"], "peak_rss_bytes": record["memory"]["peak_rss_bytes"],
            "ppl": record["perplexity"][0]["ppl"], "sparsity": record["overall_sparsity"]}


def main() -> None:
    from calib_core import assets
    from calib_core.paths import cache_dir

    models_folder = cache_dir() / "bench-models"
    models = {"smollm2-135m (bundled)": assets.bundled_model_dir()}
    for name in RANDOM_MODELS:
        models[f"{name} (random)"] = random_model(name, models_folder)
        print(f"{name} ready", flush=True)
    streamed_only = "--streamed-only" in sys.argv[1:]
    kept = [r for r in json.loads(OUT.with_suffix(".json").read_text()) if r["mode"] == "in memory"] if streamed_only else []
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, CALIB_LAB_DATA=str(Path(folder) / "data"))
        for label, path in models.items():
            weights = weight_bytes(path)
            if "bundled" in label:
                weights //= 2  # stored in fp32, run in bf16
            for method in METHODS:
                for stream in (False, True):
                    if streamed_only and not stream:
                        rows.append(next(r for r in kept if r["model"] == label and r["method"] == method))
                        continue
                    point = one_point(str(path), method, stream, env, Path(folder))
                    rows.append({"model": label, "weights_bf16_bytes": weights, "method": method,
                                 "mode": "streamed" if stream else "in memory", **point,
                                 "rss_to_weights": point["peak_rss_bytes"] / weights})
                    print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    gib = 2**30
    lines = ["| model | weights bf16 (GiB) | method | mode | prune (s) | eval (s) | peak RSS (GiB) | RSS / weights "
             "| streamed / in-memory time | ppl |", "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["method"], r["mode"]): r for r in rows}
    for r in rows:
        memory = by_key[(r["model"], r["method"], "in memory")]
        total = r["prune_s"] + r["eval_s"]
        ratio = total / (memory["prune_s"] + memory["eval_s"]) if r["mode"] == "streamed" else 1.0
        lines.append(f"| {r['model']} | {r['weights_bf16_bytes'] / gib:.2f} | {r['method']} | {r['mode']} | "
                     f"{r['prune_s']:.1f} | {r['eval_s']:.1f} | {r['peak_rss_bytes'] / gib:.2f} | "
                     f"{r['rss_to_weights']:.2f} | {ratio:.2f} | {r['ppl']:.1f} |")
    write_results(OUT, rows, lines)


if __name__ == "__main__":
    main()
