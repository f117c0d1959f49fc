"""Command line: python -m calib_core COMMAND ... (see --help). Thin callers of the library, one module per
command family; COMMANDS is the one table of subcommands, their help and their handlers."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from ..errors import CalibLabError
from ..housekeeping import clean_stale_files
from ..models import AUTO_DTYPE, resolve_dtype
from . import advise, data, prune, runs, studies
from .prune import block_table, run_spec

__all__ = ["COMMANDS", "block_table", "build_parser", "main", "run_spec"]


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


DESCRIPTION = ("Calibration Lab: how calibration data shapes post-training pruning. One subcommand per task; "
               "python -m calib_core COMMAND --help lists its options.")
COMMANDS = {
    "prune": Command("prune a model layer by layer and measure perplexity", prune.add_prune_arguments,
                     prune.cmd_prune),
    "eval": Command("perplexity of a (dense or saved pruned) model", prune.add_eval_arguments, prune.cmd_eval),
    "calib": Command("build a calibration set from a source, or self-generate one", data.add_calib_arguments,
                     data.cmd_calib),
    "sets": Command("list, delete or export saved calibration sets", data.add_sets_arguments, data.cmd_sets),
    "similarity": Command("Min-K%%++, Min-K%%, ppl, n-gram/JS/embedding similarity per sample",
                          data.add_similarity_arguments, data.cmd_similarity),
    "runs": Command("list recorded pruning runs", runs.add_runs_arguments, runs.cmd_runs),
    "sweep": Command("run a grid of runs (sources x methods x sparsities x nsamples x seeds); resumable: finished "
                     "points are skipped", runs.add_sweep_arguments, runs.cmd_sweep),
    "inspect": Command("inside a layer: why calibration data changed what was pruned (channel norms, scores, the "
                       "mask, across the model) for one run or two", runs.add_inspect_arguments, runs.cmd_inspect),
    "advise": Command("rank candidate calibration sets for a target without pruning (proxies from dense forwards), "
                      "with how well the proxy was validated", advise.add_advise_arguments, advise.cmd_advise),
    "reproduce": Command("the paper's four questions on one model as a resumable sweep, then a markdown report "
                         "with figures", studies.add_reproduce_arguments, studies.cmd_study),
    "tournament": Command("every calibration strategy x methods x settings x seeds on the bundled models, per "
                          "capability, as a resumable sweep; then strategies.md with verdicts, costs and figures",
                          studies.add_tournament_arguments, studies.cmd_study),
    "validate-advisor": Command("how well each advisor proxy ranks calibration sets as pruning does "
                                "(docs/results/advisor.md's protocol), resumable",
                                studies.add_validate_advisor_arguments, studies.cmd_study),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calib_core", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        description = command.help.replace("%%", "%")  # a description is not %-formatted, a help is
        command.add_arguments(sub.add_parser(name, help=command.help, description=description))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv  # a study names the command that remakes it
    try:
        clean_stale_files()
        if getattr(args, "dtype", None) == AUTO_DTYPE:  # resolved once: what runs is what records say
            args.dtype = resolve_dtype(AUTO_DTYPE, getattr(args, "device", "auto"))
        return COMMANDS[args.command].handler(args)
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
