"""The bundled model pruned in bfloat16 next to float32 on the CPU: perplexity, prune and eval time,
peak RSS, and how much of the bf16 mask matches the fp32 one (Jaccard of kept weights).

Wanda and SparseGPT at 50% on 32 x 512 tokens of builtin:wiki (seed 0), perplexity on 32 windows of
512 tokens of the held-out part, as bench/engine_bench.py. Each point is its own CLI process.

    .venv/bin/python bench/precision_bench.py          # about 15 min on 2 CPUs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_results  # first: it puts the repository on sys.path

OUT = ROOT / "bench" / "results" / "precision_bench"
METHODS = ("wanda", "sparsegpt")
DTYPES = ("float32", "bfloat16")


def main() -> None:
    from calib_core.metrics.agreement import mask_agreement, overall_jaccard

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, CALIB_LAB_DATA=str(Path(folder) / "data"))
        for method in METHODS:
            records = {}
            for dtype in DTYPES:
                report = Path(folder) / f"{method}-{dtype}.json"
                subprocess.run([sys.executable, "-m", "calib_core", "prune", "--method", method, "--sparsity", "0.5",
                                "--dtype", dtype, "--calib", "builtin:wiki", "--nsamples", "32", "--seqlen", "512",
                                "--eval", "builtin:wiki", "--eval-windows", "32", "--report", str(report)],
                               check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                records[dtype] = json.loads(report.read_text())
            jaccard = overall_jaccard(mask_agreement(records["float32"]["masks"], records["bfloat16"]["masks"]))
            for dtype, record in records.items():
                rows.append({"method": method, "dtype": dtype, "ppl": record["perplexity"][0]["ppl"],
                             "prune_s": record["timings"]["prune_total"], "eval_s": record["timings"]["eval"],
                             "peak_rss_gb": record["memory"]["peak_rss_bytes"] / 1e9,
                             "jaccard_with_fp32": jaccard if dtype != "float32" else 1.0})
                print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| method | dtype | ppl builtin:wiki | prune (s) | eval (s) | peak RSS (GB) | Jaccard of kept weights with fp32 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['dtype']} | {r['ppl']:.2f} | {r['prune_s']:.1f} | {r['eval_s']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {r['jaccard_with_fp32']:.4f} |" for r in rows]
    write_results(OUT, rows, lines)


if __name__ == "__main__":
    main()
