"""The pruning methods in one table: what each needs, what it builds on, its options and its hooks.

A *mask method* turns one weight matrix and its input statistics into a mask (SparseGPT also returns
updated weights): magnitude, Wanda, SparseGPT. A *refiner* (DSnoT) prunes each Linear its own way
from its base's mask (`refine`); an *allocator* (OWL) sets per-block sparsity from a scan of the
dense model (`allocate`) around a base method. Both name their valid bases (the first is the
default). `details` says in the run record which rule or variant ran. The engine calls these hooks
and names no method.

Each `Option` is a PruneConfig field with its kind, default and bounds: PruneConfig's fields, its
checks, the CLI flags and the Prune page's widgets all come from here. Adding a method is a file
`prune/<name>.py` and one `Method` entry below (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from .dsnot import dsnot_details, dsnot_module
from .magnitude import magnitude_mask
from .owl import owl_allocate, owl_details
from .ria import ria_details, ria_mask
from .sparsegpt import sparsegpt_prune
from .wanda import wanda_mask

# Input statistics the engine can collect per Linear (prune/stats.py).
NORMS, HESSIAN, MEAN_VAR = "norms", "hessian", "mean_var"


@dataclass(frozen=True)
class Option:
    """A PruneConfig field a user can set. `kind` is int, float or str (then `choices`); `low` and
    `high` bound a number (`low_open`: strictly above `low`). A default of None is filled when the
    config is resolved: `auto[0]` for unstructured patterns, `auto[1]` for N:M."""

    field: str
    help: str
    kind: type = float
    default: object = None
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    auto: tuple[float, float] | None = None
    label: str | None = None  # the Prune page's label (default: the field's name in words)

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def title(self) -> str:
        return self.label or self.field.replace("_", " ")

    def resolve(self, value, nm: bool):
        """`value` checked against the option's kind and bounds (None: its pattern's default)."""
        if value is None and self.auto is not None:
            value = self.auto[1] if nm else self.auto[0]
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{self.field} must be one of {', '.join(self.choices)}, got '{value}'.")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and value != int(value)):
            raise ConfigError(f"{self.field} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}.")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or (self.high is not None and value > self.high):
            raise ConfigError(f"{self.field} must be {self.bounds()}, got {value:g}.")
        return value

    def bounds(self) -> str:
        low = "" if self.low is None else f"{'above' if self.low_open else 'at least'} {self.low:g}"
        high = "" if self.high is None else f"at most {self.high:g}"
        return " and ".join(filter(None, (low, high))) or "any number"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line, for help texts
    explain: str  # how it chooses weights, in markdown with its formula (the Prune page)
    needs: frozenset[str] = frozenset()  # statistics of its own (a base's come on top)
    bases: tuple[str, ...] = ()  # what it builds on; first = default; empty = a mask method
    options: tuple[Option, ...] = ()
    # mask methods: (weight, stats, sparsity, pattern, config) -> (pruned positions, new weights or None)
    prune: Callable | None = None
    # refiners: (name, weight, stats, sparsity, pattern, config, memo, base_prune) -> as prune
    refine: Callable | None = None
    # allocators: (scan: per dense block (modules, stats), config) -> ([(sparsity, pattern)] per block, AllocationEvent)
    allocate: Callable | None = None
    # (config, memo, allocation, overall sparsity) -> the record's method_details
    details: Callable | None = None
    # The score it ranks weights by, from a run's kept per-channel statistics (prune/stats.CHANNEL_KINDS), for
    # the Inside a layer page: (|W| and W as float64 arrays [out, in], channel(kind) -> [in] array, the record's
    # config dict) -> (scores [out, in], its formula). Refiners and allocators show their base's (score_of).
    score: Callable | None = None
    updates_weights: bool = False  # its prune hook returns new weights: a mask alone does not remake its model

    @property
    def needs_calibration(self) -> bool:
        return bool(self.needs or self.bases)


def _magnitude(weight, stats, sparsity, pattern, config):
    return magnitude_mask(weight, sparsity, pattern), None


def _wanda(weight, stats, sparsity, pattern, config):
    return wanda_mask(weight, stats, sparsity, pattern), None


def _sparsegpt(weight, stats, sparsity, pattern, config):
    new_weight, mask = sparsegpt_prune(weight, stats.hessian(), sparsity, pattern, config.sparsegpt_blocksize,
                                       config.sparsegpt_damp, overwrite_hessian=True)  # hessian() is ours
    return mask, new_weight


def _ria(weight, stats, sparsity, pattern, config):
    return ria_mask(weight, stats, sparsity, pattern, config.ria_a, config.ria_selection, config.ria_reallocation), None


def _magnitude_score(magnitude, weight, channel, config):
    return magnitude, "|W|"


def _wanda_score(magnitude, weight, channel, config):
    return magnitude * channel("norm")[None, :], "|W| x ||X_j|| (Wanda)"


def _ria_score(magnitude, weight, channel, config):
    a = float(config.get("ria_a", 0.5))
    relative = magnitude / magnitude.sum(axis=0, keepdims=True) + magnitude / magnitude.sum(axis=1, keepdims=True)
    return relative * channel("norm")[None, :] ** a, f"(|W|/col sum + |W|/row sum) x ||X_j||^{a:g} (RIA)"


def _sparsegpt_score(magnitude, weight, channel, config):
    """SparseGPT's needs the full inverse Hessian, which a run does not keep: its diagonal form, said so."""
    diag = channel("hessian_diag")
    damped = diag + float(config.get("sparsegpt_damp", 0.01)) * diag.mean()
    return weight ** 2 * damped[None, :], ("w^2 x (H_jj + damping): SparseGPT's w^2 / [H^-1]_jj with H taken "
                                           "diagonal (a run keeps only diag H)")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("magnitude", "drop the smallest |W| of each matrix; no data",
           r"drop the smallest $|W_{ij}|$ of each matrix. No data.", prune=_magnitude, score=_magnitude_score),
    Method("wanda", "score |W_ij| * ||X_j||, drop the lowest of each output row",
           r"score $S_{ij} = |W_{ij}| \cdot \|X_j\|_2$ and drop the lowest scores of each output row.",
           frozenset({NORMS}), prune=_wanda, score=_wanda_score),
    Method("sparsegpt", "OBS-style mask and weight update with the Hessian X^T X",
           r"with $H = \tfrac{2}{n} X^\top X$, choose weights by $w^2 / [H^{-1}]_{jj}$ (the authors' code: $w^2 / U_{jj}^2$, $U$ the "
           r"Cholesky factor of $H^{-1}$) and update the remaining "
           r"weights of the row to compensate ($\delta = -\tfrac{w_j}{[H^{-1}]_{jj}} H^{-1}_{j,:}$).",
           frozenset({HESSIAN}), options=(
               Option("sparsegpt_blocksize", "SparseGPT column block size", int, 128, low=1, high=4096,
                      label="SparseGPT blocksize"),
               Option("sparsegpt_damp", "SparseGPT dampening (fraction of mean diag H)", float, 0.01, low=0, high=1,
                      label="SparseGPT damping"),
           ), prune=_sparsegpt, score=_sparsegpt_score, updates_weights=True),
    Method("ria", "score (|W_ij|/col sum + |W_ij|/row sum) * ||X_j||^a, one threshold per matrix",
           r"relative importance in the weight's row and column times the input's norm: $S_{ij} = "
           r"\big(\tfrac{|W_{ij}|}{\sum_{i'}|W_{i'j}|} + \tfrac{|W_{ij}|}{\sum_{j'}|W_{ij'}|}\big)\,\|X_j\|_2^{a}$; "
           r"unstructured: one threshold for the whole matrix.",
           frozenset({NORMS}), options=(
               Option("ria_a", "exponent a of the activation norm (the authors' default 0.5)", float, 0.5, low=0,
                      high=10, label="RIA exponent a"),
               Option("ria_selection", "unstructured: matrix (the authors' default: prune every score <= the "
                                       "(k+1)-th lowest of the matrix) or row (their --per_outneuron)", str, "matrix",
                      ("matrix", "row"), label="RIA selection"),
               Option("ria_reallocation", "N:M: heuristic channel reallocation (their --reallocation) or off (their "
                                          "default)", str, "off", ("off", "heuristic"), label="RIA N:M reallocation"),
           ), prune=_ria, details=ria_details, score=_ria_score),
    Method("dsnot", "swap pruned/kept weights of a base mask to cancel the expected output shift",
           r"starting from a Wanda mask, swap pruned/kept weights in each row while that shrinks the expected "
           r"output shift $\sum_{j\,\text{pruned}} W_{rj}\,\mathbb{E}[x_j]$; row sparsity never changes.",
           frozenset({NORMS, MEAN_VAR}), bases=("wanda", "sparsegpt"), options=(
               Option("dsnot_threshold", "stop a row's swaps once |err| is at most this", float, 0.1, low=0, high=100,
                      label="DSnoT threshold"),
               Option("dsnot_cycles", "swaps per row at most", int, 50, low=1, high=1000, label="DSnoT cycles"),
               Option("dsnot_var_power", "exponent of the variance in the regrow score", float, 1.0, low=0, high=10,
                      label="DSnoT variance power"),
               Option("dsnot_sublayers", "modules DSnoT refines; skip-mlp (the authors' default) keeps the initial "
                                         "mask on mlp.*", str, "skip-mlp", ("skip-mlp", "all", "attention", "mlp"),
                      label="DSnoT sublayers"),
               Option("dsnot_rule", "original: swap while |err| > threshold (the authors' default); same-sign: also "
                                    "keep err's sign; improve: our variant, a swap must shrink |err|", str, "original",
                      ("original", "same-sign", "improve"), label="DSnoT rule"),
               Option("dsnot_sparsegpt_init", "on a SparseGPT base: static per-row W^2/diag(H^-1)^2 (the authors') "
                                              "or full (our variant: a whole SparseGPT pass's mask)", str, "static",
                      ("static", "full"), label="DSnoT SparseGPT init"),
               Option("dsnot_threshold_scale", "seqlen: scale the threshold by seqlen/2048 (the authors tuned 0.1 at "
                                               "2048 tokens)", str, "none", ("none", "seqlen"),
                      label="DSnoT threshold scale"),
           ), refine=dsnot_module, details=dsnot_details),
    Method("owl", "lower sparsity for blocks with more outlier scores, same mean",
           r"layers whose Wanda scores have more outliers ($> M \times$ mean) get lower sparsity; the mean stays "
           r"at the target: $s_l = 1 - (r_l - \bar r + 1 - S)$.",
           frozenset({NORMS}), bases=("wanda", "sparsegpt", "magnitude"), options=(
               Option("owl_m", "outlier threshold M (default 5; 6 for N:M)", float, None, low=0, high=100,
                      low_open=True, auto=(5.0, 6.0), label="OWL M"),
               Option("owl_lambda", "OWL lambda (default 0.08; 2 in units of N for N:M)", float, None, low=0, high=8,
                      auto=(0.08, 2.0), label="OWL lambda"),
               Option("owl_nm_rule", "mixed N:M: original (the authors': width lambda, mean N may drift) or "
                                     "balanced (our variant: width 2 lambda, mean N kept)", str, "original",
                      ("original", "balanced"), label="OWL N:M rule"),
           ), allocate=owl_allocate, details=owl_details),
)}

# Settings of the engine itself, whatever the method.
ENGINE_OPTIONS = (
    Option("propagate", "feed the next block the pruned (standard) or the dense outputs", str, "pruned",
           ("pruned", "dense")),
    Option("batch_size", "calibration samples per block forward (0: by device, 1 on the CPU, 8 on CUDA)", int, 0,
           low=0, high=1024),
    Option("recon_tokens", "tokens per module for the reconstruction error", int, 512, low=0, high=1 << 20,
           label="reconstruction tokens"),
)


def mask_method(method: str, base: str | None = None) -> Method:
    """The mask method that prunes each Linear: DSnoT's and OWL's base (default: their first), or itself."""
    bases = METHODS[method].bases
    return METHODS[(base or bases[0]) if bases else method]


def score_of(method: str, base: str | None = None) -> Callable | None:
    """The score hook that shows how `method` ranks weights: its own, else its mask method's (DSnoT's and OWL's
    base); None where neither has one."""
    return METHODS[method].score or mask_method(method, base).score


def statistics_needed(method: str, base: str | None = None) -> frozenset[str]:
    """What the engine must collect per Linear for `method` on `base`."""
    return METHODS[method].needs | mask_method(method, base).needs


def options_of(method: str, base: str | None = None) -> tuple[Option, ...]:
    """The options that matter to `method` on `base`: its own, then its base's."""
    own, used = METHODS[method].options, mask_method(method, base)
    return own + (used.options if used is not METHODS[method] else ())


def all_options() -> tuple[Option, ...]:
    return tuple(o for m in METHODS.values() for o in m.options) + ENGINE_OPTIONS


def choices(field: str) -> tuple[str, ...]:
    """The choices of a categorical option (for validation and selectors)."""
    return next(o.choices for o in all_options() if o.field == field)
