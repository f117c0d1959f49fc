"""calib, sets and similarity: calibration sets built, managed and compared."""

from __future__ import annotations

import sys

from .options import add_model_args, add_sampling_args, add_strategy_args, load_model_of, strategy_options


def add_calib_arguments(calib) -> None:
    add_model_args(calib)
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
    add_sampling_args(calib, "document")
    add_strategy_args(calib)
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


def cmd_calib(args) -> int:
    from ..data import sets
    from ..data.documents import load_documents

    if args.generate and (args.windows or args.strategy != "random"):
        from ..errors import ConfigError

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

    from ..data.selfgen import GenerationConfig, generate_set, save_generated

    config = GenerationConfig(
        source=args.source, texts=args.texts, prefix_tokens=args.prefix_tokens, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty,
        batch_size=args.gen_batch_size, drop_fraction=args.drop_fraction, seed=args.seed,
    )
    config.validate()
    loaded, _ = load_model_of(args, place=True)
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
    from ..data import sets
    from ..data.strategies import STRATEGIES, build_strategy_calibration, describe_strategy

    options = strategy_options(args)
    sets.check_name(args.name)
    loaded, _ = load_model_of(args, place=True)
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


def add_sets_arguments(sets_cmd) -> None:
    sets_cmd.add_argument("action", choices=["list", "delete", "export"])
    sets_cmd.add_argument("name", nargs="?")
    sets_cmd.add_argument("--to", default=None, metavar="FILE.jsonl|FILE.parquet")
    sets_cmd.set_defaults(usage_error=sets_cmd.error)  # a missing argument is a usage error, exit 2


def cmd_sets(args) -> int:
    from ..data import sets

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


def add_similarity_arguments(similarity) -> None:
    add_model_args(similarity)
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
    add_sampling_args(similarity, "concat")
    similarity.add_argument("--k", type=float, default=0.5)
    similarity.add_argument("--ngram", type=int, default=3)
    similarity.add_argument("--max-tokens", type=int, default=512, help="tokens per text scored (--scoring texts)")
    similarity.add_argument("--seed", type=int, default=0)
    similarity.add_argument("--out", default=None, metavar="TABLE.csv", help="per-sample table")


def cmd_similarity(args) -> int:
    from ..files import check_output_file
    from ..metrics.similarity import compare_sources

    if args.out:
        check_output_file(args.out, (".csv",))
    loaded, _ = load_model_of(args, place=True)
    table, _summary = compare_sources(loaded.model, loaded.tokenizer, args.sets, args.samples, args.seed, args.scoring,
                                      args.seqlen, args.mode, args.concat_separator, args.reference, args.ngram, args.k,
                                      args.max_tokens)
    from ..runs import RunStore

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
        from ..files import atomic_file

        with atomic_file(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(f"per-sample table written to {args.out}")
    return 0
