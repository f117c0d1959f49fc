"""Command line: python -m calib_core {prune,eval,calib,sets,similarity,runs,sweep,reproduce,tournament,inspect,advise} ... (see --help): thin
callers of the library, one subcommand per task."""

from __future__ import annotations

import argparse
import sys
import time

from . import assets
from .data.sources import DEFAULT_CONCAT_SEPARATOR, MODES
from .errors import CalibLabError
from .housekeeping import clean_stale_files
from .metrics.perplexity import PROTOCOLS
from .models import AUTO_DTYPE, DTYPE_CHOICES, resolve_dtype
from .prune.config import PruneConfig
from .prune.methods import METHODS, all_options

DEFAULT_EVAL = ["builtin:wiki"]


def _unescape(text: str) -> str:
    """'\\n\\n' typed on a command line -> two newlines (a literal space or text passes unchanged)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _described(options: dict[str, str]) -> str:
    return "; ".join(f"{name}: {help}" for name, help in options.items())


def _add_sampling_args(parser, default_mode: str):
    parser.add_argument("--mode", default=default_mode, choices=list(MODES), help=_described(MODES))
    parser.add_argument("--concat-separator", type=_unescape, default=DEFAULT_CONCAT_SEPARATOR, metavar="TEXT",
                        help="concat mode: what joins the texts, backslash escapes allowed (default '\\n\\n'; "
                             "the authors' Wanda code joins self-generated texts with ' ')")


def _add_model_args(parser):
    parser.add_argument("--model", default=assets.DEFAULT_MODEL, help="hub id, local folder or bundled alias")
    parser.add_argument("--dtype", default=AUTO_DTYPE, choices=DTYPE_CHOICES,
                        help="auto (default): bfloat16 on CPUs with native bf16 arithmetic (AMX or AVX-512 BF16), "
                             "float16 on CUDA, float32 otherwise; the record states the dtype that ran")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda (the current GPU) or "
                                                         "cuda:N; checked before anything loads")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model repository's own Python code to run (off by default)")


# Flag names older than the registry, kept as aliases.
_FLAG_ALIASES = {"sparsegpt_blocksize": ("--blocksize",), "sparsegpt_damp": ("--damp",)}


def _add_method_args(parser):
    """--method, --base, the sparsity settings and every registry option as a flag of its field's name."""
    defaults = PruneConfig()
    parser.add_argument("--method", default=defaults.method, choices=list(METHODS),
                        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
    parser.add_argument("--base", default=None, help="; ".join(
        f"{m.name}: {'|'.join(m.bases)} (default {m.bases[0]})" for m in METHODS.values() if m.bases))
    parser.add_argument("--sparsity", type=float, default=defaults.sparsity)
    parser.add_argument("--pattern", default=defaults.pattern, help="unstructured or N:M (2:4, 4:8, ...)")
    for option in all_options():
        kind = {"choices": list(option.choices)} if option.choices else {"type": option.kind}
        bounds = "" if option.choices else f" ({option.bounds()})"
        parser.add_argument(option.flag, *_FLAG_ALIASES.get(option.field, ()), dest=option.field,
                            default=option.default, help=option.help + bounds, **kind)


def _add_strategy_args(parser):
    """--strategy and every strategy setting as a flag (None: the strategy's default)."""
    from .data.strategies import STRATEGIES

    parser.add_argument("--strategy", default="random", choices=list(STRATEGIES),
                        help="how the calibration windows are chosen; " + "; ".join(
                            f"{s.name}: {s.summary}" for s in STRATEGIES.values()))
    seen = {}
    for strategy in STRATEGIES.values():
        for setting in strategy.settings:
            seen.setdefault(setting.name, (setting, []))[1].append(strategy.name)
    for setting, owners in seen.values():
        kind = {"choices": list(setting.choices)} if setting.choices else {"type": type(setting.default)}
        parser.add_argument(setting.flag, dest=f"strategy_{setting.name}", default=None, **kind,
                            help=f"{'/'.join(owners)}: {setting.help} (default {setting.default})")


def _strategy_options(args) -> dict:
    """The chosen --strategy's settings given on the command line that differ from its defaults (a flag of
    another strategy: an error)."""
    from .data.strategies import STRATEGIES, check_strategy, non_default
    from .errors import ConfigError

    own = {s.name for s in STRATEGIES[args.strategy].settings}
    given = {k[len("strategy_"):]: v for k, v in vars(args).items() if k.startswith("strategy_") and v is not None}
    foreign = sorted(set(given) - own)
    if foreign:
        raise ConfigError(f"--{foreign[0].replace('_', '-')} is not a setting of strategy {args.strategy}.")
    return non_default(args.strategy, check_strategy(args.strategy, given))


def _method_config(args) -> PruneConfig:
    return PruneConfig(method=args.method, sparsity=args.sparsity, pattern=args.pattern, base=args.base,
                       device=args.device, **{o.field: getattr(args, o.field) for o in all_options()})


def _add_lm_eval_args(parser):
    parser.add_argument("--lm-eval", nargs="*", default=None, metavar="TASK",
                        help="zero-shot accuracy through lm-evaluation-harness on the in-memory model; no TASK = the "
                             "paper's set (boolq piqa hellaswag winogrande arc_easy arc_challenge); needs the hub")
    parser.add_argument("--lm-eval-limit", type=int, default=None, metavar="N", help="examples per task")
    parser.add_argument("--lm-eval-include", default=None, metavar="DIR", help="folder of local lm-eval task YAMLs")


def _add_eval_args(parser, required=False):
    parser.add_argument("--eval", action="append", default=None, required=required, metavar="SOURCE",
                        help="evaluation source (repeatable); builtin sources use their held-out part")
    parser.add_argument("--eval-seqlen", type=int, default=None, help="perplexity window (default: --seqlen)")
    parser.add_argument("--eval-windows", type=int, default=None, help="at most this many windows per source")
    parser.add_argument("--no-eval", action="store_true", help="skip perplexity")
    parser.add_argument("--ppl-protocol", default="heldout", choices=list(PROTOCOLS), help=_described(PROTOCOLS))


def _add_ray_args(parser):
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="run one Ray task per point: 'auto' joins this machine's cluster or starts a local one, "
                             "or a cluster address (ray://host:10001); results go to the local run store")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="Ray CPUs (and torch threads) per point")


def _sweep_runner(args):
    """run_sweep, or its Ray twin when --ray is given and Ray is installed (else say how to get it)."""
    from functools import partial

    from .experiments.sweeps import run_sweep

    if not args.ray:
        return run_sweep
    from .experiments.ray_sweep import RAY_MISSING, ray_available, run_sweep_on_ray

    if not ray_available():
        print(f"note: {RAY_MISSING}", file=sys.stderr)
        return run_sweep
    return partial(run_sweep_on_ray, address=args.ray, cpus_per_task=args.cpus_per_task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calib_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _handler in _commands().values():
        add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        clean_stale_files()
        if getattr(args, "dtype", None) == AUTO_DTYPE:  # resolved once: what runs is what records say
            args.dtype = resolve_dtype(AUTO_DTYPE, getattr(args, "device", "auto"))
        return _commands()[args.command][1](args)
    except CalibLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine's refusal (permissions, a full disk): say it in one line
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: lower nsamples, seqlen or the batch size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _load(args, place: bool = False):
    """The model of `args` (loaded on the CPU; with `place`, then moved whole to --device, for
    generation and scoring). A bad --device is refused before anything loads."""
    from .devices import resolve_device
    from .models import load_model, place_for_inference

    resolve_device(args.device)
    t = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                        quantization=getattr(args, "quantization", None), device=args.device,
                        on_message=lambda message: print(f"note: {message}", file=sys.stderr))
    if place:
        place_for_inference(loaded.model, args.device)
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    return loaded, time.perf_counter() - t


def _print_result(event) -> None:
    """Measured results go to stdout, one line each (progress and notes go to stderr)."""
    if getattr(event, "kind", "") == "pipeline" and event.stage in ("ppl", "cloze", "zeroshot"):
        print(event.message)


def _prune_parser(sub) -> None:
    prune = sub.add_parser("prune", help="prune a model layer by layer and measure perplexity")
    prune.add_argument("--cloze", type=int, default=0, metavar="N",
                       help="also measure offline 4-way cloze accuracy with N items per eval source "
                            "(a teaching proxy for zero-shot tasks, not comparable to published numbers)")
    _add_model_args(prune)
    _add_method_args(prune)
    prune.add_argument("--calib", default="builtin:wiki", help="calibration source spec")
    prune.add_argument("--nsamples", type=int, default=128)
    prune.add_argument("--seqlen", type=int, default=2048)
    prune.add_argument("--seed", type=int, default=0)
    _add_sampling_args(prune, "document")
    _add_strategy_args(prune)
    prune.add_argument("--text-column", default=None)
    _add_eval_args(prune)
    _add_lm_eval_args(prune)
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


def _eval_spec(args, cloze_items: int = 0):
    """The EvalSpec of the --eval, --ppl-protocol, --eval-* and --lm-eval flags."""
    from .runs.spec import EvalSpec

    return EvalSpec(sources=[] if args.no_eval else (args.eval or DEFAULT_EVAL), seqlen=args.eval_seqlen,
                    windows=args.eval_windows, protocol=args.ppl_protocol, cloze_items=cloze_items,
                    lm_eval_tasks=args.lm_eval, lm_eval_limit=args.lm_eval_limit, lm_eval_include=args.lm_eval_include)


def run_spec(args):
    """The RunSpec a `prune` command line asks for (a bad method config fails here, before any load);
    runs.spec.reproduce_command is its inverse."""
    from .runs.spec import RunSpec

    config = _method_config(args).resolved()
    return RunSpec(
        model=args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        calib=args.calib if config.needs_calibration or args.calib else None, nsamples=args.nsamples,
        seqlen=args.seqlen, seed=args.seed, mode=args.mode, concat_separator=args.concat_separator,
        text_column=args.text_column, strategy=args.strategy, strategy_options=_strategy_options(args),
        config=config, evaluation=_eval_spec(args, args.cloze), save=args.save,
        overwrite=args.overwrite, push_to_hub=args.push_to_hub, stream=args.stream, report=args.report,
    )


def _cmd_prune(args) -> int:
    from tqdm import tqdm

    from .runs.pipeline import run_prune

    spec = run_spec(args)
    config = spec.config
    label = f"{config.method} {config.pattern if config.parsed_pattern.is_nm else config.sparsity}"
    bar = None
    blocks = []

    def on_event(event):
        nonlocal bar
        _print_result(event)
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


def _eval_parser(sub) -> None:
    evaluate = sub.add_parser("eval", help="perplexity of a (dense or saved pruned) model")
    _add_model_args(evaluate)
    _add_eval_args(evaluate)
    _add_lm_eval_args(evaluate)
    evaluate.add_argument("--seqlen", type=int, default=512)
    evaluate.add_argument("--report", default=None, metavar="FILE.json")


def _cmd_eval(args) -> int:
    from .files import check_output_file
    from .models import describe_model
    from .runs.evaluate import evaluate_model
    from .runs.store import eval_record, write_json

    if args.report:
        check_output_file(args.report)
    loaded, load_seconds = _load(args)
    evaluation = evaluate_model(loaded, _eval_spec(args), args.eval_seqlen or args.seqlen, args.device, _print_result)
    if args.report:
        record = eval_record(args.model, describe_model(loaded.model), evaluation.perplexities,
                             {"load_model": load_seconds, **evaluation.timings}, loaded.notes)
        record.update(evaluation.extras)
        write_json(args.report, record)
    return 0


def _calib_parser(sub) -> None:
    calib = sub.add_parser("calib", help="build a calibration set from a source, or self-generate one")
    _add_model_args(calib)
    calib.add_argument("--name", required=True, help="save as set:NAME")
    calib.add_argument("--source", default="builtin:wiki", help="text source (prefixes when --generate)")
    calib.add_argument("--text-column", default=None)
    calib.add_argument("--limit", type=int, default=None, help="at most this many documents (plain sets)")
    calib.add_argument("--generate", action="store_true", help="self-generate from prefixes of --source")
    calib.add_argument("--windows", action="store_true",
                       help="save --nsamples windows of --seqlen tokens chosen by --strategy (implied by a --strategy "
                            "other than random); a run with the same tokenizer and seqlen uses them as they are")
    calib.add_argument("--nsamples", type=int, default=128, help="windows (--windows)")
    calib.add_argument("--seqlen", type=int, default=2048, help="tokens per window (--windows)")
    _add_sampling_args(calib, "document")
    _add_strategy_args(calib)
    calib.add_argument("--quantization", choices=["8bit", "4bit"], default=None,
                       help="load the generator through bitsandbytes")
    calib.add_argument("--texts", type=int, default=64)
    calib.add_argument("--prefix-tokens", type=int, default=2)
    calib.add_argument("--max-new-tokens", type=int, default=256,
                       help="new tokens per text at most (default 256, CPU-friendly; the paper generates up to 2048 "
                            "on GPU). Document modes need texts longer than seqlen")
    calib.add_argument("--temperature", type=float, default=0.6)
    calib.add_argument("--top-p", type=float, default=0.95)
    calib.add_argument("--top-k", type=int, default=50)
    calib.add_argument("--repetition-penalty", type=float, default=1.2)
    calib.add_argument("--gen-batch-size", type=int, default=8)
    calib.add_argument("--drop-fraction", type=float, default=0.2, help="drop this highest-ppl fraction")
    calib.add_argument("--seed", type=int, default=0)


def _cmd_calib(args) -> int:
    from .data import sets
    from .data.sources import load_documents

    if args.generate and (args.windows or args.strategy != "random"):
        from .errors import ConfigError

        raise ConfigError("--generate (prefix self-generation) and --strategy/--windows are two ways to build a set; "
                          "pick one (the self-calibration strategy generates from BOS).")
    if args.windows or args.strategy != "random":
        return _save_windows(args)
    if not args.generate:
        docs = load_documents(args.source, part="calib", limit=args.limit, text_column=args.text_column)
        path = sets.save_set(args.name, [{"text": d} for d in docs], {"kind": "source", "source": args.source})
        print(f"saved {len(docs)} texts from {args.source} as set:{args.name} ({path})")
        return 0
    from tqdm import tqdm

    from .data.selfgen import GenerationConfig, generate_set, save_generated

    config = GenerationConfig(
        source=args.source, texts=args.texts, prefix_tokens=args.prefix_tokens, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty,
        batch_size=args.gen_batch_size, drop_fraction=args.drop_fraction, seed=args.seed,
    )
    config.validate()
    loaded, _ = _load(args, place=True)
    bar = tqdm(total=config.texts, desc="generating", unit="text", file=sys.stderr)

    def on_event(event):
        bar.n = event.texts_done
        bar.set_postfix(tok_s=f"{event.tokens_per_second:.1f}")
        bar.refresh()

    result = generate_set(loaded.model, loaded.tokenizer, config, on_event, model_name=args.model)
    bar.close()
    save_generated(args.name, result)
    kept = len(result.kept_texts)
    print(f"saved set:{args.name}: {len(result.records)} texts, {kept} kept "
          f"(ppl < {result.threshold if result.threshold is None else round(result.threshold, 2)})")
    longer = ", ".join(f"{n} > {length}" for length, n in result.metadata["kept_texts_longer_than"].items())
    print(f"kept texts longer than N tokens: {longer}")
    return 0


def _save_windows(args) -> int:
    from .data import sets
    from .data.strategies import STRATEGIES, build_strategy_calibration, describe_strategy

    options = _strategy_options(args)
    sets.check_name(args.name)
    loaded, _ = _load(args, place=True)
    calibration = build_strategy_calibration(
        args.source, loaded.tokenizer, args.nsamples, args.seqlen, args.seed, args.mode, args.strategy, options,
        loaded.model if STRATEGIES[args.strategy].needs_model else None, args.text_column, args.concat_separator)
    path = sets.save_windows(args.name, calibration, loaded.tokenizer, args.model)
    strategy = calibration.strategy or {}
    took = f" in {strategy['seconds']:.1f} s" if strategy else ""
    print(f"saved {calibration.nsamples} windows x {calibration.seqlen} tokens of {args.source} chosen by "
          f"{describe_strategy(args.strategy, options)}{took} as set:{args.name} ({path}); fingerprint "
          f"{calibration.fingerprint}")
    return 0


def _sets_parser(sub) -> None:
    sets_cmd = sub.add_parser("sets", help="list, delete or export saved calibration sets")
    sets_cmd.add_argument("action", choices=["list", "delete", "export"])
    sets_cmd.add_argument("name", nargs="?")
    sets_cmd.add_argument("--to", default=None, metavar="FILE.jsonl|FILE.parquet")
    sets_cmd.set_defaults(usage_error=sets_cmd.error)  # a missing argument is a usage error, exit 2


def _cmd_sets(args) -> int:
    from .data import sets

    if args.action == "list":
        for name in sets.list_sets():
            data = sets.load_set(name)
            kept = sum(r.get("kept", True) for r in data["records"])
            print(f"{name}\t{kept}/{len(data['records'])} texts\t{data['metadata'].get('kind', '')}")
        return 0
    if not args.name:
        args.usage_error(f"'sets {args.action}' needs a set name.")
    if args.action == "delete":
        sets.delete_set(args.name)
        print(f"deleted set:{args.name}")
    else:
        if not args.to:
            args.usage_error("'sets export' needs --to FILE.jsonl or FILE.parquet.")
        print(f"exported to {sets.export_set(args.name, args.to)}")
    return 0


def _similarity_parser(sub) -> None:
    similarity = sub.add_parser("similarity", help="Min-K%%++, Min-K%%, ppl, n-gram/JS/embedding similarity per sample")
    _add_model_args(similarity)
    similarity.add_argument("--quantization", choices=["8bit", "4bit"], default=None)
    similarity.add_argument("--sets", nargs="+", required=True, metavar="SOURCE", help="sources or set:NAME to compare")
    similarity.add_argument("--reference", default=None,
                            help="reference corpus: a source spec or one of c4, slimpajama, dclm, fineweb-edu, wikipedia")
    similarity.add_argument("--samples", type=int, default=64, help="windows (or texts) per set")
    similarity.add_argument("--scoring", default="windows", choices=["windows", "texts"],
                            help="windows: calibration windows of --seqlen tokens drawn as `prune` draws them "
                                 "(--mode, --seed), with the tokenizer's BOS first, so every set is scored on "
                                 "equally long items; texts: whole texts cut to --max-tokens, no special tokens")
    similarity.add_argument("--seqlen", type=int, default=512, help="window length (--scoring windows)")
    _add_sampling_args(similarity, "concat")
    similarity.add_argument("--k", type=float, default=0.5)
    similarity.add_argument("--ngram", type=int, default=3)
    similarity.add_argument("--max-tokens", type=int, default=512, help="tokens per text scored (--scoring texts)")
    similarity.add_argument("--seed", type=int, default=0)
    similarity.add_argument("--out", default=None, metavar="TABLE.csv", help="per-sample table")


def _cmd_similarity(args) -> int:
    from .files import check_output_file
    from .metrics.similarity import compare_sources

    if args.out:
        check_output_file(args.out, (".csv",))
    loaded, _ = _load(args, place=True)
    table, _summary = compare_sources(loaded.model, loaded.tokenizer, args.sets, args.samples, args.seed, args.scoring,
                                      args.seqlen, args.mode, args.concat_separator, args.reference, args.ngram, args.k,
                                      args.max_tokens)
    from .runs import RunStore

    RunStore().record_similarity(args.model, table)  # the Results page sets these against perplexity
    means = table.drop(columns=["sample", "text"]).groupby("set", sort=False).agg(["mean", "std"])
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))
    if args.scoring == "windows":
        scored = f"{args.mode} windows of {args.seqlen} tokens (+ the tokenizer's leading special tokens), seed {args.seed}"
    else:
        scored = f"whole texts cut to {args.max_tokens} tokens, window {args.max_tokens}"
    print(f"(K = {args.k}; scored: {scored}; tokens per scored item: {table['tokens'].min()}-{table['tokens'].max()}"
          f"{'; reference ' + table.attrs['reference'] if table.attrs['reference'] else ''})")
    if args.out:
        from .files import atomic_file

        with atomic_file(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(f"per-sample table written to {args.out}")
    return 0


def _runs_parser(sub) -> None:
    runs = sub.add_parser("runs", help="list recorded pruning runs")
    runs.add_argument("--show", type=int, default=None, metavar="ID", help="print one run's full record")


def _cmd_runs(args) -> int:
    import json

    from .runs import RunStore

    store = RunStore()
    if args.show is not None:
        print(json.dumps(store.get(args.show), indent=2))
        return 0
    runs = store.list()
    if store.read_only_reason:
        print(f"note: the run store {store.path} is read-only ({store.read_only_reason}); new runs cannot be "
              f"recorded until that is fixed", file=sys.stderr)
    print(f"{'id':>4} {'status':<11} {'created':<19} {'model':<16} {'method':<10} {'sparsity':<8} ppl")
    for run in runs:
        ppl = ", ".join(f"{p['ppl']:.2f}" for p in (run["record"] or {}).get("perplexity", []))
        print(f"{run['id']:>4} {run['status']:<11} {run['created']:<19} {str(run['model'])[:16]:<16} "
              f"{str(run['method']):<10} {str(run['sparsity']):<8} {ppl}")
    return 0


def _sweep_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help="run a grid of runs (sources x methods x sparsities x nsamples x seeds); "
                                         "resumable: finished points are skipped")
    sweep.add_argument("grid", metavar="GRID.yaml", help="grid file (.yaml/.yml/.json), see calib_core/experiments/sweeps.py")
    sweep.add_argument("--dry-run", action="store_true", help="list the points and which already finished")
    _add_ray_args(sweep)
    sweep.add_argument("--figures", default=None, metavar="DIR",
                       help="afterwards, write each method's charts (HTML, and PNG where kaleido works) and a "
                            "summary CSV of the sweep to DIR")


def _cmd_sweep(args) -> int:
    from .runs import RunStore
    from .experiments.sweeps import SweepGrid

    grid = SweepGrid.from_file(args.grid)
    if args.figures:
        from .files import check_output_folder

        check_output_folder(args.figures, overwrite=True)  # figures replace their own files
    store = RunStore()
    if args.dry_run:
        _print_plan(grid.points(), store.finished_points(grid.name))
        return 0

    def on_event(event):
        if getattr(event, "kind", "") == "pipeline" and event.stage in ("sweep", "ppl", "run"):
            print(event.message, flush=True)

    summary = _sweep_runner(args)(grid, store, on_event)
    print(f"sweep {grid.name}: {summary.ran} ran, {summary.skipped} skipped (finished before), "
          f"{len(summary.failed)} failed")
    for failure in summary.failed:
        print(f"failed: {failure}", file=sys.stderr)
    if args.figures:
        _export_sweep(store, grid.name, args.figures)
    return 1 if summary.failed else 0


def _print_plan(points, done: set, to_run: set | None = None) -> None:
    """One line per point: done, todo, or carried (over from an earlier report, when `to_run` is given)."""
    for point in points:
        state = "done" if point.key in done else ("todo" if to_run is None or point.key in to_run else "carried")
        print(f"{state:7}  {point.key}  {point.label()}")


def _export_sweep(store, name: str, folder: str) -> None:
    from .experiments.stats import sweep_frame
    from .experiments.sweep_figures import export_sweep

    _written, notes = export_sweep(sweep_frame(store, name), folder)
    for note in notes:
        print(f"note: {note}" if note.startswith("PNG skipped") else note, file=sys.stderr)
    print(f"figures: {folder}")


def _reproduce_parser(sub) -> None:
    reproduce = sub.add_parser("reproduce", help="the paper's four questions on one model as a resumable sweep, "
                                                 "then a markdown report with figures")
    _add_model_args(reproduce)
    reproduce.add_argument("--method", default="wanda", choices=[m for m in METHODS if m != "magnitude"],
                           help="the method of Q1, Q2 and the evaluation check (the paper's: wanda)")
    reproduce.add_argument("--seeds", type=int, default=5)
    reproduce.add_argument("--nsamples", type=int, default=16, help="calibration samples per point (Q1, Q3, Q4)")
    reproduce.add_argument("--seqlen", type=int, default=512)
    reproduce.add_argument("--nsamples-curve", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="Q2")
    reproduce.add_argument("--eval-windows", type=int, default=2, help="held-out windows per builtin source")
    reproduce.add_argument("--selfgen-texts", type=int, default=None, help="prefixes to self-generate from (default 128)")
    reproduce.add_argument("--selfgen-max-new-tokens", type=int, default=None,
                           help="new tokens per self-generated text (default 640 on CPU; the paper: 2048)")
    reproduce.add_argument("--previous", default=None, metavar="RUNS.csv",
                           help="an earlier report's runs.csv: its points whose method and data did not change are "
                                "carried over instead of rerun (the report says which)")
    reproduce.add_argument("--name", default="reproduce", help="sweep name in the run store")
    reproduce.add_argument("--out", default="docs/results", metavar="DIR", help="report folder")
    reproduce.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    reproduce.add_argument("--dry-run", action="store_true", help="list the points and which already finished")
    _add_ray_args(reproduce)


def _cmd_reproduce(args) -> int:
    from dataclasses import replace

    from .experiments.reproduce import ReproSettings, ordered_points, points_to_run, run_reproduction
    from .runs import RunStore

    defaults = ReproSettings()
    settings = ReproSettings(model=args.model, method=args.method, seeds=args.seeds, nsamples=args.nsamples, seqlen=args.seqlen,
                             nsamples_curve=args.nsamples_curve, eval_windows=args.eval_windows, name=args.name,
                             selfgen=replace(defaults.selfgen, texts=args.selfgen_texts or defaults.selfgen.texts,
                                             max_new_tokens=args.selfgen_max_new_tokens or defaults.selfgen.max_new_tokens))
    if not args.dry_run:
        from .files import check_output_folder

        check_output_folder(args.out, overwrite=True)  # the report replaces its own files
    store = RunStore()
    previous = None
    if args.previous:
        import pandas as pd

        previous = pd.read_csv(args.previous)
    if args.dry_run:
        done = store.finished_points(settings.name)
        points = ordered_points(settings)
        to_run = {p.key for p in points_to_run(settings, previous)}
        _print_plan(points, done, to_run)
        carried = f", {len(points) - len(to_run)} carried over from {args.previous}" if previous is not None else ""
        print(f"{sum(p.key in done for p in points)}/{len(points)} points finished{carried}")
        return 0
    if not args.report_only:
        def on_event(event):
            if getattr(event, "kind", "") == "pipeline" and event.stage in ("sweep", "ppl", "selfgen"):
                print(f"{time.strftime('%H:%M:%S')} {event.message}", flush=True)

        summary = run_reproduction(settings, store, on_event, runner=_sweep_runner(args), previous=previous)
        print(f"reproduction: {summary.ran} ran, {summary.skipped} skipped, {len(summary.failed)} failed")
        for failure in summary.failed:
            print(f"failed: {failure}", file=sys.stderr)
    from .experiments.report import write_report

    # The report names the command that makes its runs (a --report-only redraw shows the same numbers).
    argv = [a for a in sys.argv[1:] if a != "--report-only"]
    command = "python -m calib_core " + " ".join(argv) if sys.argv[0].endswith("__main__.py") else None
    path = write_report(settings, store, args.out, command, previous=args.previous)
    print(f"report: {path}")
    return 0


def _tournament_parser(sub) -> None:
    tournament = sub.add_parser("tournament", help="every calibration strategy x methods x settings x seeds on the "
                                                   "bundled models, per capability, as a resumable sweep; then "
                                                   "strategies.md with verdicts, costs and figures")
    tournament.add_argument("--quick", action="store_true",
                            help="a demo-sized tournament (one model, Wanda 50%%, 2 seeds, 4 x 128 tokens: minutes)")
    tournament.add_argument("--models", nargs="+", default=None, help="models (default: both bundled models)")
    tournament.add_argument("--seeds", type=int, default=None)
    tournament.add_argument("--nsamples", type=int, default=None)
    tournament.add_argument("--seqlen", type=int, default=None)
    tournament.add_argument("--name", default=None, help="sweep name in the run store")
    tournament.add_argument("--out", default=None, metavar="DIR",
                            help="report folder (default docs/results; --quick: docs/results/quick)")
    tournament.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    tournament.add_argument("--dry-run", action="store_true", help="list the points and which already finished")
    tournament.add_argument("--previous", default=None, metavar="CSV",
                            help="runs of this tournament finished earlier, e.g. on another machine (a report's "
                                 "strategies-runs.csv): their points are skipped and their rows join the report")
    tournament.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                            help="dtype of every point (default auto: the --previous runs' dtype, else this machine's "
                                 "native one; the point keys name it)")
    tournament.add_argument("--pilot", action="store_true",
                            help="run the pilot that fixed the protocol (random draws at 32 x 512 and 128 x 512, "
                                 "Wanda 50%%, 8 seeds) and write its seed-noise table into the report")
    tournament.add_argument("--reread", default=None, metavar="CSV",
                            help="re-read an earlier tournament's runs CSV with this protocol's paired intervals, "
                                 "margins and claims: writes strategies-reread.md beside it (no run)")


def _cmd_tournament(args) -> int:
    from dataclasses import fields

    from .experiments.tournament import QUICK, TournamentSettings, run_tournament
    from .runs import RunStore

    if args.reread:
        from .experiments.tournament_report import write_reread

        print(f"report: {write_reread(args.reread)}")
        return 0
    if args.pilot:
        return _run_pilot(args)
    chosen = dict(QUICK) if args.quick else {}
    for name in ("models", "seeds", "nsamples", "seqlen", "name", "previous", "dtype"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    settings = TournamentSettings(**{k: v for k, v in chosen.items() if k in {f.name for f in fields(TournamentSettings)}})
    out = args.out or ("docs/results/quick" if args.quick else "docs/results")
    store = RunStore()
    if args.dry_run:
        done = store.finished_points(settings.name)
        if settings.previous:
            from .experiments.tournament import previous_frame

            done = set(done) | set(previous_frame(settings)["point_key"])
        points = [p for model in settings.models for p in settings.points(model)]
        _print_plan(points, done)
        print(f"{sum(p.key in done for p in points)}/{len(points)} points finished")
        return 0
    from .files import check_output_folder

    check_output_folder(out, overwrite=True)  # the report replaces its own files
    if not args.report_only:
        summary = run_tournament(settings, store, _print_sweep_progress)
        print(f"tournament: {summary.ran} ran, {summary.skipped} skipped, {len(summary.failed)} failed")
        for failure in summary.failed:
            print(f"failed: {failure}", file=sys.stderr)
    from .experiments.tournament_report import write_tournament_report

    argv = [a for a in sys.argv[1:] if a != "--report-only"]
    command = "python -m calib_core " + " ".join(argv) if argv and argv[0] == "tournament" else None
    earlier = None if args.quick else "strategies-2026-12-03/strategies.md"
    print(f"report: {write_tournament_report(settings, store, out, command, earlier=earlier)}")
    return 0


def _run_pilot(args) -> int:
    """The pilot's runs (resumable), their rows into the report folder's pilot CSV, then the report."""
    from pathlib import Path

    from .experiments.tournament import TournamentSettings, pilot_frame, pilot_settings, run_tournament
    from .experiments.tournament_protocol import PILOT_RUNS_FILE
    from .experiments.tournament_report import write_tournament_report
    from .files import check_output_folder
    from .runs import RunStore

    out = args.out or "docs/results"
    check_output_folder(out, overwrite=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    store = RunStore()
    if not args.report_only:
        for settings in pilot_settings():
            summary = run_tournament(settings, store, _print_sweep_progress, references=False)  # no report uses them
            print(f"pilot {settings.nsamples} x {settings.seqlen}: {summary.ran} ran, {summary.skipped} skipped, "
                  f"{len(summary.failed)} failed")
    frame = pilot_frame(store)
    frame.to_csv(Path(out) / PILOT_RUNS_FILE, index=False)
    print(f"pilot runs: {len(frame)} rows in {Path(out) / PILOT_RUNS_FILE}")
    report = write_tournament_report(TournamentSettings(), store, out, "python -m calib_core tournament",
                                     earlier="strategies-2026-12-03/strategies.md")
    print(f"report: {report}")
    return 0


def _inspect_parser(sub) -> None:
    inspect = sub.add_parser("inspect", help="inside a layer: why calibration data changed what was pruned (channel "
                                             "norms, scores, the mask, across the model) for one run or two")
    inspect.add_argument("runs", nargs="+", type=int, metavar="RUN", help="one run id, or two to compare")
    inspect.add_argument("--block", type=int, default=None, help="decoder block (default: where two runs' masks "
                                                                 "differ most; for one run, the module with most outliers)")
    inspect.add_argument("--module", default=None, help="prunable module of the block, e.g. mlp.down_proj")
    inspect.add_argument("--top-k", type=int, default=None, help="channels the mask difference is attributed to "
                                                                 "(default: the outlier channels of either run)")
    inspect.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG, HTML and CSV of each view")


def _cmd_inspect(args) -> int:
    from .errors import ConfigError
    from .experiments.inside_figures import export_views, module_views
    from .metrics import inside
    from .runs import RunStore

    if len(args.runs) > 2:
        raise ConfigError("inspect takes one run, or two to compare.")
    store = RunStore()
    runs = [inside.open_run(store, run_id) for run_id in args.runs]
    a, b = runs[0], runs[1] if len(runs) == 2 else None
    block, module = args.block, args.module
    if block is None or module is None:
        default = inside.most_different_module(a, b) if b is not None else inside.most_outlying_module(a)
        block = default[0] if block is None else block
        module = default[1] if module is None else module
    views, notes = module_views(a, block, module, b, args.top_k)
    written, export_notes = export_views(views, args.out)
    print(f"block {block} {module}: " + "; ".join(f"{v.name}: {v.figure.layout.title.text.split('<br>')[0]}" for v in views))
    for note in notes + export_notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _advise_parser(sub) -> None:
    from .experiments.advisor import BEST, PROXIES

    advise = sub.add_parser("advise", help="rank candidate calibration sets for a target without pruning (proxies "
                                           "from dense forwards), with how well the proxy was validated")
    _add_model_args(advise)
    _add_method_args(advise)
    advise.add_argument("--candidates", nargs="+", required=True, metavar="SOURCE[@STRATEGY]",
                        help="two or more calibration sets: any source spec, optionally chosen by a strategy, e.g. "
                             "builtin:wiki builtin:code builtin:wiki@least-ppl")
    advise.add_argument("--target", required=True, metavar="SOURCE",
                        help="the text standing for the capability you care about, e.g. builtin:code")
    advise.add_argument("--proxy", default=BEST, choices=[BEST, *PROXIES],
                        help=f"the proxy the ranking follows (default {BEST}: the one that agreed best with pruning in "
                             f"the validation for this method, setting and target); "
                             + "; ".join(f"{p.name}: {p.label}" for p in PROXIES.values()).replace("%", "%%"))
    advise.add_argument("--nsamples", type=int, default=8)
    advise.add_argument("--seqlen", type=int, default=256)
    advise.add_argument("--seed", type=int, default=0)
    advise.add_argument("--target-windows", type=int, default=8, help="windows of the target text (another seed)")
    advise.add_argument("--verify", type=int, default=0, metavar="K",
                        help="then prune with the top K candidates and measure perplexity on the target")
    advise.add_argument("--eval-windows", type=int, default=8, help="--verify: windows of the target evaluated")


def _cmd_advise(args) -> int:
    from .errors import ConfigError
    from .experiments.advisor import (BEST, AdviceSettings, Candidate, best_validated_proxy, check_case, proxy_table,
                                      ranking, self_generated_caution, validation_note, verify)
    from .models import load_model

    candidates = [Candidate.parse(c) for c in args.candidates]
    if args.verify < 0 or args.verify > len(candidates):
        raise ConfigError(f"--verify takes 0 to {len(candidates)} candidates, got {args.verify}.")
    config = _method_config(args).resolved()
    settings = AdviceSettings(nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                              target_windows=args.target_windows, config=config)
    check_case(candidates, args.target, settings)  # before the model loads
    loaded = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=args.device)
    table = proxy_table(loaded, candidates, args.target, settings, on_event=lambda m: print(m, file=sys.stderr))
    proxy, why = (best_validated_proxy(table.attrs["method"], table.attrs["setting"], args.target)
                  if args.proxy == BEST else (args.proxy, f"ranked by {args.proxy} (--proxy)"))
    ranked = ranking(table, proxy)
    columns = ["rank", "candidate", proxy] + [p for p in table.columns if p not in (
        "rank", "candidate", proxy, "source", "strategy")]
    print(ranked[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(why + ".")
    print(validation_note(proxy, table.attrs["method"], table.attrs["setting"], args.target, args.model).text)
    caution = self_generated_caution(ranked)
    if caution:
        print(caution)
    if args.verify:
        checked = verify(args.model, args.dtype, ranked.head(args.verify), args.target, settings, args.eval_windows)
        print(checked.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _print_sweep_progress(event) -> None:
    """A sweep's points and its strategies' selections, one timed line each."""
    if getattr(event, "kind", "") == "pipeline" and event.stage in ("sweep", "calibration") and (
            event.stage == "sweep" or event.message.startswith("choosing")):
        print(f"{time.strftime('%H:%M:%S')} {event.message}", flush=True)


def _validate_advisor_parser(sub) -> None:
    validate = sub.add_parser("validate-advisor", help="how well each advisor proxy ranks calibration sets as pruning "
                                                       "does (docs/results/advisor.md's protocol), resumable")
    validate.add_argument("--models", nargs="+", default=None, help="models (default: both bundled models)")
    validate.add_argument("--previous", default=None, metavar="RUNS.csv",
                          help="runs finished earlier, whose points are reused (default: --runs-out when it exists, "
                               "else the first tournament's docs/results/strategies-2026-12-03/strategies-runs.csv); '' for none")
    validate.add_argument("--runs-out", default="docs/results/advisor-runs.csv", metavar="CSV",
                          help="where every measured run is written (also after Ctrl-C), to carry them to the "
                               "next machine")
    validate.add_argument("--no-runs", action="store_true",
                          help="run no missing point: validate on the runs of --previous as they were measured "
                               "(matched by model, method, setting, entry and seed, whichever revision of a "
                               "strategy made them)")
    validate.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                          help="dtype of the runs and proxies (default auto: the --previous runs' dtype, else this "
                               "machine's native one)")
    validate.add_argument("--proxies", default="docs/results/advisor-proxies.csv", metavar="CSV")
    validate.add_argument("--report", default="docs/results/advisor.md", metavar="FILE")


def _cmd_validate_advisor(args) -> int:
    from pathlib import Path

    from .experiments.advisor import VALIDATION_TABLE
    from .experiments.advisor_validation import ValidationSettings, read_rows, validate, write_results
    from .experiments.tournament import ROUND_ONE_RUNS
    from .runs import RunStore

    settings = ValidationSettings()
    if args.models:
        settings.tournament.models = args.models
    runs_out = Path(args.runs_out)
    previous = args.previous if args.previous is not None else \
        str(runs_out) if runs_out.is_file() else ROUND_ONE_RUNS
    if previous and Path(previous).exists():
        settings.tournament.previous = previous
    if args.dtype:
        settings.tournament.dtype = args.dtype
    store = RunStore()
    found, verdicts, costs = validate(settings, store, Path(args.proxies), VALIDATION_TABLE, not args.no_runs,
                                       on_event=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True),
                                       runs_csv=runs_out, on_run_event=_print_sweep_progress,
                                       frozen=Path(previous) if args.no_runs and previous else None)
    measured = found.attrs.get("measured", 0)
    command = "python -m calib_core " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["validate-advisor"] else \
        "python -m calib_core validate-advisor"
    report = write_results(Path(args.report), found, verdicts, costs, settings, measured, command,
                           read_rows(Path(args.proxies)))
    print(f"report: {report}")
    return 0


def block_table(blocks) -> str:
    """Per-block summary: target vs achieved sparsity, OWL outlier ratio, worst module error, time."""
    from .prune.events import blocks_frame

    lines = [f"{'block':>5} {'target':>7} {'pattern':>12} {'achieved':>8} {'outlier%':>8} {'max rel err':>11} {'sec':>6}"]
    for b in blocks_frame(blocks).itertuples():
        lines.append(
            f"{b.block:>5} {b.target:>7.3f} {b.pattern:>12} {b.achieved:>8.4f} "
            f"{'' if b.outlier_ratio is None else f'{b.outlier_ratio:.3f}':>8} "
            f"{'' if b.max_rel_error is None else f'{b.max_rel_error:.4f}':>11} {b.seconds:>6.2f}"
        )
    return "\n".join(lines)


def _commands() -> dict:
    """Each subcommand: the function that adds its parser, and its handler (they sit side by side above)."""
    return {"prune": (_prune_parser, _cmd_prune), "calib": (_calib_parser, _cmd_calib),
            "sets": (_sets_parser, _cmd_sets), "similarity": (_similarity_parser, _cmd_similarity),
            "runs": (_runs_parser, _cmd_runs), "sweep": (_sweep_parser, _cmd_sweep),
            "reproduce": (_reproduce_parser, _cmd_reproduce), "eval": (_eval_parser, _cmd_eval),
            "tournament": (_tournament_parser, _cmd_tournament), "inspect": (_inspect_parser, _cmd_inspect),
            "advise": (_advise_parser, _cmd_advise), "validate-advisor": (_validate_advisor_parser, _cmd_validate_advisor)}

