"""Engine benchmark on the bundled model (issue #2): perplexity, wall time, cost ratio, peak memory.

Each point runs in its own process so its peak RSS is its own. Inside that process, one plain
full-model forward over the same calibration tokens (batch 1, no cache) is timed right before the
prune and again right after it; the cost ratio is prune / mean(forward), measured in one run.

    .venv/bin/python bench/engine_bench.py            # all points (about 70 min on 2 CPUs)
    .venv/bin/python bench/engine_bench.py --only wanda:0.5 --only sparsegpt:2:4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from calib_core.prune.methods import METHODS as REGISTRY

ROOT = Path(__file__).resolve().parent.parent

CALIB = dict(spec="builtin:wiki", nsamples=32, seqlen=512, seed=0)
EVAL = dict(spec="builtin:wiki", seqlen=512, max_windows=32)
SETTINGS = ["0.5", "0.6", "0.7", "2:4"]
METHODS = list(REGISTRY)


def plain_forward(model, ids) -> float:
    """One plain full-model forward over the calibration tokens (batch 1, no KV cache)."""
    import torch

    with torch.inference_mode():
        t = time.perf_counter()
        for row in ids.split(1):
            model(input_ids=row, use_cache=False)
        return time.perf_counter() - t


def single(method: str, setting: str, owl_lambda: float | None = None) -> dict:
    import torch

    from calib_core.data.sources import build_calibration
    from calib_core.metrics.perplexity import perplexity
    from calib_core.models import load_model
    from calib_core.prune import PruneConfig, prune_model

    torch.set_num_threads(2)
    lm = load_model("smollm2-135m")
    out = {"method": method, "setting": setting}
    if owl_lambda is not None:
        out["owl_lambda"] = owl_lambda
    if method != "dense":
        pattern = setting if ":" in setting else "unstructured"
        sparsity = 0.5 if ":" in setting else float(setting)
        config = PruneConfig(method=method, sparsity=sparsity, pattern=pattern, owl_lambda=owl_lambda)
        calib = None
        if config.needs_calibration:
            calib = build_calibration(CALIB["spec"], lm.tokenizer, CALIB["nsamples"], CALIB["seqlen"], CALIB["seed"])
            out["forward_before_seconds"] = plain_forward(lm.model, calib.input_ids)
        t = time.perf_counter()
        result = prune_model(lm.model, None if calib is None else calib.input_ids, config)
        out["prune_seconds"] = time.perf_counter() - t
        if calib is not None:
            # Timed again after the prune: the mean of both brackets the prune against machine drift.
            out["forward_after_seconds"] = plain_forward(lm.model, calib.input_ids)
            out["forward_seconds"] = (out["forward_before_seconds"] + out["forward_after_seconds"]) / 2
        out["overall_sparsity"] = result.overall_sparsity
        out["stage_seconds"] = result.seconds
        if "forward_seconds" in out:
            out["cost_ratio"] = out["prune_seconds"] / out["forward_seconds"]
        if result.allocation:
            out["owl_sparsity_range"] = [min(result.allocation.target_sparsities), max(result.allocation.target_sparsities)]
            out["owl_patterns"] = sorted(set(result.allocation.patterns))
            out["owl_planned_sparsity"] = result.allocation.planned_sparsity
        if result.method_details:
            out["method_details"] = result.method_details
    ppl = perplexity(lm.model, lm.tokenizer, EVAL["spec"], seqlen=EVAL["seqlen"], max_windows=EVAL["max_windows"])
    out["ppl"] = ppl.ppl
    out["eval_tokens"] = ppl.tokens
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| method | setting | ppl | prune s | plain forward s | cost ratio | peak RSS GB | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = ""
        if "owl_sparsity_range" in r:
            lo, hi = r["owl_sparsity_range"]
            note = (f"layer sparsity {lo:.3f}..{hi:.3f}" if ":" not in r["setting"] else
                    "N per layer " + ", ".join(r["owl_patterns"]) + f"; achieved {r['overall_sparsity']:.4f}")
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['ppl']:.2f} | {r.get('prune_seconds', 0):.1f} | "
            f"{r.get('forward_seconds', float('nan')):.1f} | {r.get('cost_ratio', float('nan')):.2f} | "
            f"{r['peak_rss_gb']:.2f} | {note} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", nargs=2, metavar=("METHOD", "SETTING"))
    parser.add_argument("--only", action="append", help="METHOD:SETTING, e.g. wanda:0.5 or owl:2:4")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine_bench"))
    parser.add_argument("--owl-lambda", type=float, help="override OWL's lambda (default: 0.08, or 2 for N:M)")
    parser.add_argument("--merge", action="store_true",
                        help="replace the --only points in the existing results instead of starting afresh")
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single(*args.single, owl_lambda=args.owl_lambda)))
        return
    points = [("dense", "-")] + [(m, s) for s in SETTINGS for m in METHODS]
    if args.only:
        points = [tuple(p.split(":", 1)) for p in args.only]
    rows = []
    if args.merge:
        rows = [r for r in json.loads(Path(args.out + ".json").read_text())["rows"]
                if (r["method"], r["setting"]) not in points]
    for method, setting in points:
        command = [sys.executable, __file__, "--single", method, setting]
        if args.owl_lambda is not None:
            command += ["--owl-lambda", str(args.owl_lambda)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{method} {setting} failed")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.sort(key=lambda r: (r["setting"] != "-", SETTINGS.index(r["setting"]) if r["setting"] in SETTINGS else -1,
                                 METHODS.index(r["method"]) if r["method"] in METHODS else -1))
        print(json.dumps(rows[-1]), flush=True)
        Path(args.out + ".json").write_text(json.dumps({"calibration": CALIB, "eval": EVAL, "rows": rows}, indent=2))
    lam = f"; OWL lambda {args.owl_lambda}" if args.owl_lambda is not None else ""
    Path(args.out + ".md").write_text(
        f"Calibration {CALIB}; eval {EVAL}; torch threads 2{lam}.\n\n" + table(rows) + "\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
