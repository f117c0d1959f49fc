"""advise: rank candidate calibration sets for a target without pruning."""

from __future__ import annotations

import sys

from .options import add_method_args, add_model_args, method_config


def add_advise_arguments(advise) -> None:
    from ..studies.advisor import BEST, PROXIES

    add_model_args(advise)
    add_method_args(advise)
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


def cmd_advise(args) -> int:
    from ..errors import ConfigError
    from ..models import load_model
    from ..studies.advisor import (
        BEST,
        AdviceSettings,
        Candidate,
        best_validated_proxy,
        check_case,
        proxy_table,
        ranking,
        self_generated_caution,
        validation_note,
        verify,
    )

    candidates = [Candidate.parse(c) for c in args.candidates]
    if args.verify < 0 or args.verify > len(candidates):
        raise ConfigError(f"--verify takes 0 to {len(candidates)} candidates, got {args.verify}.")
    config = method_config(args).resolved()
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
