"""The pruning methods in one table: what each needs, what it builds on, and its options.

A *mask method* turns one weight matrix and its input statistics into a mask (SparseGPT also returns
updated weights): magnitude, Wanda, SparseGPT. DSnoT *refines* a base method's mask and OWL
*allocates* per-block sparsity around a base method; both name their valid bases here (the first is
the default). The config, the CLI flags, the Prune and Sweeps pages and the benches read this table.

Adding a mask method: write `prune/<name>.py` with a pure function, add one `Method` line to
`METHODS` (and `PruneConfig` fields plus `Option`s if it has settings). See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .magnitude import magnitude_mask
from .sparsegpt import sparsegpt_prune
from .wanda import wanda_mask

# Input statistics the engine can collect per Linear (prune/stats.py).
NORMS, HESSIAN, MEAN_VAR = "norms", "hessian", "mean_var"


@dataclass(frozen=True)
class Option:
    """A PruneConfig field a user can set: its help text, and its choices when it is categorical."""

    field: str
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    needs: frozenset[str] = frozenset()  # statistics of its own (a base's come on top)
    bases: tuple[str, ...] = ()  # what it builds on; first = default; empty = a mask method
    options: tuple[Option, ...] = ()
    # mask methods: (weight, stats, sparsity, pattern, config) -> (pruned positions, new weights or None)
    prune: Callable | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.name != "magnitude"


def _magnitude(weight, stats, sparsity, pattern, config):
    return magnitude_mask(weight, sparsity, pattern), None


def _wanda(weight, stats, sparsity, pattern, config):
    return wanda_mask(weight, stats, sparsity, pattern), None


def _sparsegpt(weight, stats, sparsity, pattern, config):
    new_weight, mask = sparsegpt_prune(weight, stats.hessian(), sparsity, pattern, config.sparsegpt_blocksize,
                                       config.sparsegpt_damp, overwrite_hessian=True)  # hessian() is ours
    return mask, new_weight


SPARSEGPT_OPTIONS = (
    Option("sparsegpt_blocksize", "SparseGPT column block size"),
    Option("sparsegpt_damp", "SparseGPT dampening (fraction of mean diag H)"),
)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("magnitude", "drop the smallest |W| of each matrix; no data", prune=_magnitude),
    Method("wanda", "score |W_ij| * ||X_j||, drop the lowest of each output row", frozenset({NORMS}), prune=_wanda),
    Method("sparsegpt", "OBS-style mask and weight update with the Hessian X^T X", frozenset({HESSIAN}),
           options=SPARSEGPT_OPTIONS, prune=_sparsegpt),
    Method("dsnot", "swap pruned/kept weights of a base mask to cancel the expected output shift",
           frozenset({NORMS, MEAN_VAR}), bases=("wanda", "sparsegpt"), options=(
               Option("dsnot_threshold", "stop a row's swaps once |err| is at most this"),
               Option("dsnot_cycles", "swaps per row at most"),
               Option("dsnot_var_power", "exponent of the variance in the regrow score"),
               Option("dsnot_sublayers", "modules DSnoT refines; skip-mlp (the authors' default) keeps the initial "
                                         "mask on mlp.*", ("skip-mlp", "all", "attention", "mlp")),
               Option("dsnot_rule", "original: swap while |err| > threshold (the authors' default); same-sign: also "
                                    "keep err's sign; improve: our variant, a swap must shrink |err|",
                      ("original", "same-sign", "improve")),
               Option("dsnot_sparsegpt_init", "on a SparseGPT base: static per-row W^2/diag(H^-1)^2 (the authors') "
                                              "or full (our variant: a whole SparseGPT pass's mask)",
                      ("static", "full")),
               Option("dsnot_threshold_scale", "seqlen: scale the threshold by seqlen/2048 (the authors tuned 0.1 at "
                                               "2048 tokens)", ("none", "seqlen")),
           )),
    Method("owl", "lower sparsity for blocks with more outlier scores, same mean", frozenset({NORMS}),
           bases=("wanda", "sparsegpt", "magnitude"), options=(
               Option("owl_m", "outlier threshold M (default 5; 6 for N:M)"),
               Option("owl_lambda", "OWL lambda (default 0.08; 2 in units of N for N:M)"),
               Option("owl_nm_rule", "mixed N:M: original (the authors': width lambda, mean N may drift) or "
                                     "balanced (our variant: width 2 lambda, mean N kept)", ("original", "balanced")),
           )),
)}

# Settings of the engine itself, whatever the method.
ENGINE_OPTIONS = (
    Option("propagate", "feed the next block the pruned (standard) or the dense outputs", ("pruned", "dense")),
    Option("batch_size", "calibration samples per block forward (0: by device, 1 on the CPU, 8 on CUDA)"),
    Option("recon_tokens", "tokens per module for the reconstruction error"),
)


def mask_method(method: str, base: str | None = None) -> Method:
    """The mask method that prunes each Linear: DSnoT's and OWL's base (default: their first), or itself."""
    bases = METHODS[method].bases
    return METHODS[(base or bases[0]) if bases else method]


def statistics_needed(method: str, base: str | None = None) -> frozenset[str]:
    """What the engine must collect per Linear for `method` on `base`."""
    return METHODS[method].needs | mask_method(method, base).needs


def all_options() -> tuple[Option, ...]:
    return tuple(o for m in METHODS.values() for o in m.options) + ENGINE_OPTIONS


def choices(field: str) -> tuple[str, ...]:
    """The choices of a categorical option (for validation and selectors)."""
    return next(o.choices for o in all_options() if o.field == field)
