"""Command line: python -m calib_core {prune,eval} ... (see --help)."""

from __future__ import annotations

import argparse
import sys
import time

from . import assets
from .errors import CalibLabError

DEFAULT_EVAL = ["builtin:wiki"]


def _add_model_args(parser):
    parser.add_argument("--model", default=assets.DEFAULT_MODEL, help="hub id, local folder or bundled alias")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model repository's own Python code to run (off by default)")


def _add_eval_args(parser, required=False):
    parser.add_argument("--eval", action="append", default=None, required=required, metavar="SOURCE",
                        help="evaluation source (repeatable); builtin sources use their held-out part")
    parser.add_argument("--eval-seqlen", type=int, default=None, help="perplexity window (default: --seqlen)")
    parser.add_argument("--eval-windows", type=int, default=None, help="at most this many windows per source")
    parser.add_argument("--no-eval", action="store_true", help="skip perplexity")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calib_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prune = sub.add_parser("prune", help="prune a model layer by layer and measure perplexity")
    _add_model_args(prune)
    prune.add_argument("--method", default="wanda", choices=["magnitude", "wanda", "sparsegpt", "dsnot", "owl"])
    prune.add_argument("--base", default=None, help="DSnoT: wanda|sparsegpt; OWL: wanda|sparsegpt|magnitude")
    prune.add_argument("--sparsity", type=float, default=0.5)
    prune.add_argument("--pattern", default="unstructured", help="unstructured or N:M (2:4, 4:8, ...)")
    prune.add_argument("--calib", default="builtin:wiki", help="calibration source spec")
    prune.add_argument("--nsamples", type=int, default=128)
    prune.add_argument("--seqlen", type=int, default=2048)
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--mode", default="document", choices=["document", "concat"])
    prune.add_argument("--text-column", default=None)
    prune.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block size")
    prune.add_argument("--damp", type=float, default=0.01, help="SparseGPT dampening (fraction of mean diag H)")
    prune.add_argument("--dsnot-threshold", type=float, default=0.1)
    prune.add_argument("--dsnot-cycles", type=int, default=50)
    prune.add_argument("--dsnot-var-power", type=float, default=1.0)
    prune.add_argument("--dsnot-sublayers", default="all", choices=["all", "attention", "mlp"])
    prune.add_argument("--owl-m", type=float, default=None, help="outlier threshold M (default 5; 6 for N:M)")
    prune.add_argument("--owl-lambda", type=float, default=None, help="OWL lambda (default 0.08; 2 for N:M)")
    prune.add_argument("--propagate", default="pruned", choices=["pruned", "dense"])
    prune.add_argument("--batch-size", type=int, default=1, help="calibration samples per block forward")
    prune.add_argument("--recon-tokens", type=int, default=512, help="tokens per module for reconstruction error")
    _add_eval_args(prune)
    prune.add_argument("--save", default=None, metavar="DIR", help="save the pruned model (HF folder)")
    prune.add_argument("--report", default=None, metavar="FILE.json")

    evaluate = sub.add_parser("eval", help="perplexity of a (dense or saved pruned) model")
    _add_model_args(evaluate)
    _add_eval_args(evaluate)
    evaluate.add_argument("--seqlen", type=int, default=512)
    evaluate.add_argument("--report", default=None, metavar="FILE.json")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"prune": _cmd_prune, "eval": _cmd_eval}[args.command](args)
    except CalibLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _load(args):
    from .models import load_model

    t = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    return loaded, time.perf_counter() - t


def _perplexities(args, loaded, seqlen):
    from .evaluate import perplexity

    if args.no_eval:
        return []
    results = []
    for spec in args.eval or DEFAULT_EVAL:
        result = perplexity(loaded.model, loaded.tokenizer, spec, seqlen=args.eval_seqlen or seqlen,
                            max_windows=args.eval_windows, device=args.device)
        print(f"ppl {spec}: {result.ppl:.3f}  ({result.windows} x {result.seqlen} tokens, {result.seconds:.1f} s)")
        results.append(result)
    return results


def _cmd_prune(args) -> int:
    from tqdm import tqdm

    from .data import build_calibration
    from .models import describe_model
    from .prune import PruneConfig, prune_model
    from .runs import run_record, write_json

    config = PruneConfig(
        method=args.method, sparsity=args.sparsity, pattern=args.pattern, base=args.base,
        sparsegpt_blocksize=args.blocksize, sparsegpt_damp=args.damp, dsnot_threshold=args.dsnot_threshold,
        dsnot_cycles=args.dsnot_cycles, dsnot_var_power=args.dsnot_var_power,
        dsnot_sublayers=args.dsnot_sublayers, owl_m=args.owl_m, owl_lambda=args.owl_lambda,
        propagate=args.propagate, batch_size=args.batch_size, recon_tokens=args.recon_tokens, device=args.device,
    ).resolved()  # fail on a bad config before loading anything
    loaded, load_seconds = _load(args)
    info = describe_model(loaded.model)
    calibration = None
    t = time.perf_counter()
    if config.needs_calibration or args.calib:
        calibration = build_calibration(args.calib, loaded.tokenizer, args.nsamples, args.seqlen, args.seed,
                                        args.mode, args.text_column)
    calib_seconds = time.perf_counter() - t
    if calibration is not None:
        from .prune.engine import Pruner

        estimate = Pruner(loaded.model, config).memory_estimate(calibration.nsamples, calibration.seqlen)
        print(f"memory estimate: {estimate.describe()}", file=sys.stderr)
    bar = tqdm(total=info["blocks"], desc=f"{config.method} {config.pattern if config.parsed_pattern.is_nm else config.sparsity}",
               unit="block", file=sys.stderr)

    def on_event(event):
        if event.kind == "block":
            bar.update(1)
            bar.set_postfix(sparsity=f"{event.sparsity:.3f}")
        elif event.kind == "stage" and event.stage == "outlier_scan":
            bar.set_description(f"OWL outlier scan {event.step}/{event.total}")

    result = prune_model(loaded.model, calibration.input_ids if calibration else None, config, on_event)
    bar.close()
    print(block_table(result))
    print(f"overall sparsity {result.overall_sparsity:.4f}; prune {result.seconds['total']:.1f} s")
    perplexities = _perplexities(args, loaded, args.seqlen)
    timings = {"load_model": load_seconds, "calibration": calib_seconds, **{f"prune_{k}": v for k, v in result.seconds.items()},
               "eval": sum(p.seconds for p in perplexities)}
    record = run_record(args.model, info, calibration, result, perplexities, timings, loaded.notes)
    if args.save:
        loaded.model.save_pretrained(args.save)
        loaded.tokenizer.save_pretrained(args.save)
        write_json(f"{args.save}/calib_lab_report.json", record)
        print(f"saved pruned model to {args.save}")
    if args.report:
        write_json(args.report, record)
        print(f"report written to {args.report}")
    return 0


def _cmd_eval(args) -> int:
    from .models import describe_model
    from .runs import run_record, write_json

    loaded, load_seconds = _load(args)
    perplexities = _perplexities(args, loaded, args.seqlen)
    if args.report:
        record = run_record(args.model, describe_model(loaded.model), None, None, perplexities,
                            {"load_model": load_seconds}, loaded.notes)
        write_json(args.report, record)
    return 0


def block_table(result) -> str:
    """Per-block summary: target vs achieved sparsity, OWL outlier ratio, worst module error, time."""
    lines = [f"{'block':>5} {'target':>7} {'pattern':>12} {'achieved':>8} {'outlier%':>8} {'max rel err':>11} {'sec':>6}"]
    for b in result.blocks:
        errors = [m.rel_recon_error for m in b.modules if m.rel_recon_error is not None]
        lines.append(
            f"{b.index:>5} {b.target_sparsity:>7.3f} {b.pattern:>12} {b.sparsity:>8.4f} "
            f"{'' if b.outlier_ratio is None else f'{b.outlier_ratio:.3f}':>8} "
            f"{'' if not errors else f'{max(errors):.4f}':>11} {b.seconds:>6.2f}"
        )
    return "\n".join(lines)
