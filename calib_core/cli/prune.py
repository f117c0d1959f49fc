"""prune and eval: one model pruned (or evaluated) and measured."""

from __future__ import annotations

import sys

from .options import (
    add_eval_args,
    add_lm_eval_args,
    add_method_args,
    add_model_args,
    add_sampling_args,
    add_strategy_args,
    eval_spec,
    load_model_of,
    method_config,
    print_result,
    strategy_options,
)


def add_prune_arguments(prune) -> None:
    prune.add_argument("--cloze", type=int, default=0, metavar="N",
                       help="also measure offline 4-way cloze accuracy with N items per eval source "
                            "(a teaching proxy for zero-shot tasks, not comparable to published numbers)")
    add_model_args(prune)
    add_method_args(prune)
    prune.add_argument("--calib", default="builtin:wiki", help="calibration source spec")
    prune.add_argument("--nsamples", type=int, default=128)
    prune.add_argument("--seqlen", type=int, default=2048)
    prune.add_argument("--seed", type=int, default=0)
    add_sampling_args(prune, "document")
    add_strategy_args(prune)
    prune.add_argument("--text-column", default=None)
    add_eval_args(prune)
    add_lm_eval_args(prune)
    prune.add_argument("--save", default=None, metavar="DIR",
                       help="save the pruned model, its tokenizer and the report (a Hugging Face folder; written "
                            "to a temporary sibling and renamed into place when complete)")
    prune.add_argument("--overwrite", action="store_true", help="replace a non-empty --save folder")
    prune.add_argument("--stream", action="store_true",
                       help="read each decoder block from the model's safetensors files for its turn and write it "
                            "out after it (models larger than memory; Llama, Mistral, Qwen, Gemma, Phi-3 layouts)")
    prune.add_argument("--push-to-hub", default=None, metavar="OWNER/NAME",
                       help="upload the --save folder (model, tokenizer, model card, report) to this hub repository; "
                            "checked before the run: offline or without a token it says so at once and saves locally")
    prune.add_argument("--report", default=None, metavar="FILE.json")


def run_spec(args):
    """The RunSpec a `prune` command line asks for (a bad method config fails here, before any load);
    runs.spec.reproduce_command is its inverse."""
    from ..runs.spec import RunSpec

    config = method_config(args).resolved()
    return RunSpec(
        model=args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        calib=args.calib if config.needs_calibration or args.calib else None, nsamples=args.nsamples,
        seqlen=args.seqlen, seed=args.seed, mode=args.mode, concat_separator=args.concat_separator,
        text_column=args.text_column, strategy=args.strategy, strategy_options=strategy_options(args),
        config=config, evaluation=eval_spec(args, args.cloze), save=args.save,
        overwrite=args.overwrite, push_to_hub=args.push_to_hub, stream=args.stream, report=args.report,
    )


def cmd_prune(args) -> int:
    from tqdm import tqdm

    from ..runs.pipeline import run_prune

    spec = run_spec(args)
    config = spec.config
    label = f"{config.method} {config.pattern if config.parsed_pattern.is_nm else config.sparsity}"
    bar = None
    blocks = []

    def on_event(event):
        nonlocal bar
        print_result(event)
        if event.kind == "pipeline" and (event.stage in ("load", "estimate", "run", "saved", "push")
                                         or event.message.startswith("note: ")):
            print(f"{event.stage}: {event.message}", file=sys.stderr)
        elif event.kind == "block":
            blocks.append(event)
            bar.update(1)
            bar.set_postfix(sparsity=f"{event.sparsity:.3f}")
        elif event.kind == "stage" and bar is None:
            bar = tqdm(total=event.total, desc=label, unit="block", file=sys.stderr)
        if event.kind == "stage" and event.stage == "outlier_scan":
            bar.set_description(f"OWL outlier scan {event.step}/{event.total}")
        elif event.kind == "stage" and event.stage == "prune" and event.step == event.total:
            bar.close()
            print(block_table(blocks))

    record = run_prune(spec, on_event, origin="cli")
    print(f"overall sparsity {record['overall_sparsity']:.4f}; prune {record['timings']['prune_total']:.1f} s; "
          f"recorded as run {record['run_id']}")
    if "saved" in record:
        saved = record["saved"]
        bitmask = saved["bitmask_estimate_bytes"]
        print(f"saved {saved['path']}: {saved['bytes']:,} bytes on disk ({saved['format']}; weights "
              f"{saved['weights_bytes']:,} bytes" + (f", a bitmask encoding would take about {bitmask:,})" if bitmask
                                                     else ")"))
    if "error" in record.get("push", {}):
        print(f"error: not uploaded to {spec.push_to_hub}: {record['push']['error']}", file=sys.stderr)
        return 1
    return 0


def block_table(blocks) -> str:
    """Per-block summary: target vs achieved sparsity, OWL outlier ratio, worst module error, time."""
    from ..prune.events import blocks_frame

    lines = [f"{'block':>5} {'target':>7} {'pattern':>12} {'achieved':>8} {'outlier%':>8} {'max rel err':>11} {'sec':>6}"]
    for b in blocks_frame(blocks).itertuples():
        lines.append(
            f"{b.block:>5} {b.target:>7.3f} {b.pattern:>12} {b.achieved:>8.4f} "
            f"{'' if b.outlier_ratio is None else f'{b.outlier_ratio:.3f}':>8} "
            f"{'' if b.max_rel_error is None else f'{b.max_rel_error:.4f}':>11} {b.seconds:>6.2f}"
        )
    return "\n".join(lines)


def add_eval_arguments(evaluate) -> None:
    add_model_args(evaluate)
    add_eval_args(evaluate)
    add_lm_eval_args(evaluate)
    evaluate.add_argument("--seqlen", type=int, default=512)
    evaluate.add_argument("--report", default=None, metavar="FILE.json")


def cmd_eval(args) -> int:
    from ..files import check_output_file
    from ..models import describe_model
    from ..runs.evaluate import evaluate_model
    from ..runs.store import eval_record, write_json

    if args.report:
        check_output_file(args.report)
    loaded, load_seconds = load_model_of(args)
    evaluation = evaluate_model(loaded, eval_spec(args), args.eval_seqlen or args.seqlen, args.device, print_result)
    if args.report:
        record = eval_record(args.model, describe_model(loaded.model), evaluation.perplexities,
                             {"load_model": load_seconds, **evaluation.timings}, loaded.notes)
        record.update(evaluation.extras)
        write_json(args.report, record)
    return 0
