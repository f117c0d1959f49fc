"""The pruning methods in one table: what each needs, what it builds on, its options and its hooks.

A *mask method* turns one weight matrix and its input statistics into a mask (SparseGPT also returns
updated weights): magnitude, Wanda, SparseGPT. A *refiner* (DSnoT) prunes each Linear its own way
from its base's mask (`refine`); an *allocator* (OWL) sets per-block sparsity from a scan of the
dense model (`allocate`) around a base method. Both name their valid bases (the first is the
default). `details` says in the run record which rule or variant ran. The engine calls these hooks
and names no method.

Each method's options are written as fields of its own options class where the method lives (e.g.
`SparseGPTOptions` in prune/sparsegpt.py, made with prune/options.option): PruneConfig inherits them, and
their `Option`s here (kind, default, bounds) give its checks, the CLI flags and the Prune page's widgets.
Adding a method is a file `prune/<name>.py`, one `Method` entry below and, if it has options, its options
class among PruneConfig's bases (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .dsnot import DSnoTOptions, dsnot_details, dsnot_module
from .magnitude import magnitude_mask
from .options import EngineOptions, Option, declared_options
from .owl import OWLOptions, owl_allocate, owl_details
from .ria import RIAOptions, ria_details, ria_mask
from .sparsegpt import SparseGPTOptions, sparsegpt_prune
from .wanda import wanda_mask

# Input statistics the engine can collect per Linear (prune/stats.py).
NORMS, HESSIAN, MEAN_VAR = "norms", "hessian", "mean_var"


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
           frozenset({HESSIAN}), options=declared_options(SparseGPTOptions), prune=_sparsegpt, score=_sparsegpt_score, updates_weights=True),
    Method("ria", "score (|W_ij|/col sum + |W_ij|/row sum) * ||X_j||^a, one threshold per matrix",
           r"relative importance in the weight's row and column times the input's norm: $S_{ij} = "
           r"\big(\tfrac{|W_{ij}|}{\sum_{i'}|W_{i'j}|} + \tfrac{|W_{ij}|}{\sum_{j'}|W_{ij'}|}\big)\,\|X_j\|_2^{a}$; "
           r"unstructured: one threshold for the whole matrix.",
           frozenset({NORMS}), options=declared_options(RIAOptions), prune=_ria, details=ria_details, score=_ria_score),
    Method("dsnot", "swap pruned/kept weights of a base mask to cancel the expected output shift",
           r"starting from a Wanda mask, swap pruned/kept weights in each row while that shrinks the expected "
           r"output shift $\sum_{j\,\text{pruned}} W_{rj}\,\mathbb{E}[x_j]$; row sparsity never changes.",
           frozenset({NORMS, MEAN_VAR}), bases=("wanda", "sparsegpt"), options=declared_options(DSnoTOptions), refine=dsnot_module, details=dsnot_details),
    Method("owl", "lower sparsity for blocks with more outlier scores, same mean",
           r"layers whose Wanda scores have more outliers ($> M \times$ mean) get lower sparsity; the mean stays "
           r"at the target: $s_l = 1 - (r_l - \bar r + 1 - S)$.",
           frozenset({NORMS}), bases=("wanda", "sparsegpt", "magnitude"), options=declared_options(OWLOptions), allocate=owl_allocate, details=owl_details),
)}

# Settings of the engine itself, whatever the method.
ENGINE_OPTIONS = declared_options(EngineOptions)


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
