"""reproduce, tournament and validate-advisor: the studies (calib_core.studies), each a Study built from its
flags and run by one handler (studies.study.conduct: dry run, output check, resumable run, report)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..models import DTYPE_CHOICES
from ..prune.methods import METHODS
from .options import add_model_args, add_ray_args, print_progress, sweep_runner


def add_study_args(parser, out_help: str | None = None) -> None:
    """What every study command takes: --dry-run and --report-only (and --out DIR with `out_help`)."""
    if out_help:
        parser.add_argument("--out", default=None, metavar="DIR", help=out_help)
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    parser.add_argument("--dry-run", action="store_true", help="list the points and which already finished")


def add_reproduce_arguments(reproduce) -> None:
    add_model_args(reproduce)
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
    add_ray_args(reproduce)
    add_study_args(reproduce, "report folder (default docs/results)")


def add_tournament_arguments(tournament) -> None:
    tournament.add_argument("--quick", action="store_true",
                            help="a demo-sized tournament (one model, Wanda 50%%, 2 seeds, 4 x 128 tokens: minutes)")
    tournament.add_argument("--models", nargs="+", default=None, help="models (default: both bundled models)")
    tournament.add_argument("--seeds", type=int, default=None)
    tournament.add_argument("--nsamples", type=int, default=None)
    tournament.add_argument("--seqlen", type=int, default=None)
    tournament.add_argument("--name", default=None, help="sweep name in the run store")
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
    add_study_args(tournament, "report folder (default docs/results; --quick: docs/results/quick)")


def add_validate_advisor_arguments(validate) -> None:
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
    add_study_args(validate)


def reproduction_of(args):
    from dataclasses import replace

    from ..studies.catalog import Reproduction
    from ..studies.reproduce import ReproSettings

    defaults = ReproSettings()
    selfgen = replace(defaults.selfgen, texts=args.selfgen_texts or defaults.selfgen.texts,
                      max_new_tokens=args.selfgen_max_new_tokens or defaults.selfgen.max_new_tokens)
    settings = ReproSettings(model=args.model, method=args.method, seeds=args.seeds, nsamples=args.nsamples,
                             seqlen=args.seqlen, nsamples_curve=args.nsamples_curve, eval_windows=args.eval_windows,
                             name=args.name, selfgen=selfgen)
    return Reproduction(settings, args.out or "docs/results", args.previous, sweep_runner(args))


def tournament_of(args):
    from dataclasses import fields

    from ..studies.catalog import Tournament, TournamentPilot
    from ..studies.tournament import QUICK, TournamentSettings

    if args.pilot:
        return TournamentPilot(args.out or "docs/results")
    chosen = dict(QUICK) if args.quick else {}
    for name in ("models", "seeds", "nsamples", "seqlen", "name", "previous", "dtype"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    known = {f.name for f in fields(TournamentSettings)}
    settings = TournamentSettings(**{k: v for k, v in chosen.items() if k in known})
    if args.quick:
        return Tournament(settings, args.out or "docs/results/quick", earlier=None)
    return Tournament(settings, args.out or "docs/results")


def advisor_validation_of(args):
    import time

    from ..studies.advisor_validation import ValidationSettings
    from ..studies.catalog import AdvisorValidation
    from ..studies.tournament import ROUND_ONE_RUNS

    settings = ValidationSettings()
    if args.models:
        settings.tournament.models = args.models
    runs_out = Path(args.runs_out)
    previous = args.previous if args.previous is not None else str(runs_out) if runs_out.is_file() else ROUND_ONE_RUNS
    if previous and Path(previous).exists():
        settings.tournament.previous = previous
    if args.dtype:
        settings.tournament.dtype = args.dtype
    return AdvisorValidation(settings, args.report, args.proxies, args.runs_out, run_missing=not args.no_runs,
                             frozen=previous or None,
                             on_message=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True))


STUDIES = {"reproduce": reproduction_of, "tournament": tournament_of, "validate-advisor": advisor_validation_of}


def cmd_study(args) -> int:
    """The one handler of every study command."""
    from ..runs import RunStore
    from ..studies.study import conduct

    if getattr(args, "reread", None):  # a re-reading of committed runs: no study runs
        from ..studies.tournament_report import write_reread

        print(f"report: {write_reread(args.reread)}")
        return 0
    study = STUDIES[args.command](args)
    return conduct(study, RunStore(), args.argv, args.dry_run, args.report_only, on_event=print_progress,
                   warn=lambda line: print(line, file=sys.stderr))
