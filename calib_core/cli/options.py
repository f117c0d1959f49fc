"""Option groups that several commands share (model, method, strategy, sampling, evaluation, Ray) and the
helpers that turn parsed flags into library objects (PruneConfig, EvalSpec, a loaded model, printed events)."""

from __future__ import annotations

import sys
import time

from .. import assets
from ..data.sources import DEFAULT_CONCAT_SEPARATOR, MODES
from ..metrics.perplexity import PROTOCOLS
from ..models import AUTO_DTYPE, DTYPE_CHOICES
from ..prune.config import PruneConfig
from ..prune.methods import METHODS, all_options

DEFAULT_EVAL = ["builtin:wiki"]


def _unescape(text: str) -> str:
    """'\\n\\n' typed on a command line -> two newlines (a literal space or text passes unchanged)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def described(options: dict[str, str]) -> str:
    return "; ".join(f"{name}: {help}" for name, help in options.items())


def add_sampling_args(parser, default_mode: str):
    parser.add_argument("--mode", default=default_mode, choices=list(MODES), help=described(MODES))
    parser.add_argument("--concat-separator", type=_unescape, default=DEFAULT_CONCAT_SEPARATOR, metavar="TEXT",
                        help="concat mode: what joins the texts, backslash escapes allowed (default '\\n\\n'; "
                             "the authors' Wanda code joins self-generated texts with ' ')")


def add_model_args(parser):
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


def add_method_args(parser):
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


def add_strategy_args(parser):
    """--strategy and every strategy setting as a flag (None: the strategy's default)."""
    from ..data.strategies import STRATEGIES

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


def strategy_options(args) -> dict:
    """The chosen --strategy's settings given on the command line that differ from its defaults (a flag of
    another strategy: an error)."""
    from ..data.strategies import STRATEGIES, check_strategy, non_default
    from ..errors import ConfigError

    own = {s.name for s in STRATEGIES[args.strategy].settings}
    given = {k[len("strategy_"):]: v for k, v in vars(args).items() if k.startswith("strategy_") and v is not None}
    foreign = sorted(set(given) - own)
    if foreign:
        raise ConfigError(f"--{foreign[0].replace('_', '-')} is not a setting of strategy {args.strategy}.")
    return non_default(args.strategy, check_strategy(args.strategy, given))


def method_config(args) -> PruneConfig:
    return PruneConfig(method=args.method, sparsity=args.sparsity, pattern=args.pattern, base=args.base,
                       device=args.device, **{o.field: getattr(args, o.field) for o in all_options()})


def add_lm_eval_args(parser):
    parser.add_argument("--lm-eval", nargs="*", default=None, metavar="TASK",
                        help="zero-shot accuracy through lm-evaluation-harness on the in-memory model; no TASK = the "
                             "paper's set (boolq piqa hellaswag winogrande arc_easy arc_challenge); needs the hub")
    parser.add_argument("--lm-eval-limit", type=int, default=None, metavar="N", help="examples per task")
    parser.add_argument("--lm-eval-include", default=None, metavar="DIR", help="folder of local lm-eval task YAMLs")


def add_eval_args(parser, required=False):
    parser.add_argument("--eval", action="append", default=None, required=required, metavar="SOURCE",
                        help="evaluation source (repeatable); builtin sources use their held-out part")
    parser.add_argument("--eval-seqlen", type=int, default=None, help="perplexity window (default: --seqlen)")
    parser.add_argument("--eval-windows", type=int, default=None, help="at most this many windows per source")
    parser.add_argument("--no-eval", action="store_true", help="skip perplexity")
    parser.add_argument("--ppl-protocol", default="heldout", choices=list(PROTOCOLS), help=described(PROTOCOLS))


def eval_spec(args, cloze_items: int = 0):
    """The EvalSpec of the --eval, --ppl-protocol, --eval-* and --lm-eval flags."""
    from ..runs.spec import EvalSpec

    return EvalSpec(sources=[] if args.no_eval else (args.eval or DEFAULT_EVAL), seqlen=args.eval_seqlen,
                    windows=args.eval_windows, protocol=args.ppl_protocol, cloze_items=cloze_items,
                    lm_eval_tasks=args.lm_eval, lm_eval_limit=args.lm_eval_limit, lm_eval_include=args.lm_eval_include)


def add_ray_args(parser):
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="run one Ray task per point: 'auto' joins this machine's cluster or starts a local one, "
                             "or a cluster address (ray://host:10001); results go to the local run store")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="Ray CPUs (and torch threads) per point")


def sweep_runner(args):
    """run_sweep, or its Ray twin when --ray is given and Ray is installed (else say how to get it)."""
    from functools import partial

    from ..experiments.sweeps import run_sweep

    if not args.ray:
        return run_sweep
    from ..experiments.ray_sweep import RAY_MISSING, ray_available, run_sweep_on_ray

    if not ray_available():
        print(f"note: {RAY_MISSING}", file=sys.stderr)
        return run_sweep
    return partial(run_sweep_on_ray, address=args.ray, cpus_per_task=args.cpus_per_task)


def load_model_of(args, place: bool = False):
    """The model of `args` (loaded on the CPU; with `place`, then moved whole to --device, for
    generation and scoring). A bad --device is refused before anything loads."""
    from ..devices import resolve_device
    from ..models import load_model, place_for_inference

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


def print_result(event) -> None:
    """Measured results go to stdout, one line each (progress and notes go to stderr)."""
    if getattr(event, "kind", "") == "pipeline" and event.stage in ("ppl", "cloze", "zeroshot"):
        print(event.message)


def print_progress(event) -> None:
    """A study's points, their perplexities, self-generation and the strategies' selections, one timed line each."""
    if getattr(event, "kind", "") == "pipeline" and (event.stage in ("sweep", "ppl", "selfgen") or (
            event.stage == "calibration" and event.message.startswith("choosing"))):
        print(f"{time.strftime('%H:%M:%S')} {event.message}", flush=True)
