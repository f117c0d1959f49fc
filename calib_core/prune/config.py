"""A pruning run's settings, validated before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..errors import ConfigError
from .masks import Pattern, check_sparsity, parse_pattern

METHODS = ("magnitude", "wanda", "sparsegpt", "dsnot", "owl")
BASES = {"dsnot": ("wanda", "sparsegpt"), "owl": ("wanda", "sparsegpt", "magnitude")}
# "skip-mlp" is the DSnoT authors' default (`--skip_layer mlp`): modules whose first name part is
# `mlp` keep the initial mask; on Llama-style names only the attention Linears are refined.
SUBLAYERS = ("skip-mlp", "all", "attention", "mlp")
# DSnoT's swap rule: "original" applies the swap while |err| > threshold (the authors' default,
# `without_same_sign`); "same-sign" adds their optional test that err keeps its initial sign;
# "improve" is our variant: a swap must shrink |err|, and a row stops at its first rejected swap.
DSNOT_RULES = ("original", "same-sign", "improve")
# DSnoT on a SparseGPT base: "static" is the authors' initial mask (per-row W^2 / diag(H^-1)^2, no
# weight update); "full" is our variant (the mask of a complete SparseGPT pass).
DSNOT_SPARSEGPT_INIT = ("static", "full")
# DSnoT's error is a sum over tokens, so its threshold depends on seqlen: "none" uses it as given
# (the authors tuned 0.1 at 2048 tokens); "seqlen" scales it by seqlen / 2048.
DSNOT_THRESHOLD_SCALE = ("none", "seqlen")
# OWL mixed N:M: "original" is the authors' rule (width lambda, N_l = N - round(r_l - mean r), mean N
# may drift from the target); "balanced" is our variant (width 2 lambda, clipped, mean N kept).
OWL_NM_RULES = ("original", "balanced")
PROPAGATION = ("pruned", "dense")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "wanda"
    sparsity: float = 0.5  # ignored for N:M patterns, where sparsity is N/M
    pattern: str = "unstructured"
    base: str | None = None  # DSnoT's initial mask / OWL's per-layer method; default wanda
    sparsegpt_blocksize: int = 128
    sparsegpt_damp: float = 0.01
    dsnot_threshold: float = 0.1
    dsnot_cycles: int = 50
    dsnot_var_power: float = 1.0
    dsnot_sublayers: str = "skip-mlp"
    dsnot_rule: str = "original"
    dsnot_sparsegpt_init: str = "static"
    dsnot_threshold_scale: str = "none"
    owl_nm_rule: str = "original"
    owl_m: float | None = None  # outlier threshold M; default 5 unstructured, 6 N:M
    owl_lambda: float | None = None  # default 0.08 unstructured, 2 (in units of N) N:M
    propagate: str = "pruned"  # feed the next block the pruned (standard) or the dense outputs
    batch_size: int = 1  # calibration samples per block forward (1 is fastest on CPU)
    recon_tokens: int = 512  # calibration tokens per module on which reconstruction error is measured
    device: str = "auto"

    @property
    def parsed_pattern(self) -> Pattern:
        return parse_pattern(self.pattern)

    @property
    def target_sparsity(self) -> float:
        pattern = self.parsed_pattern
        return pattern.sparsity if pattern.is_nm else float(self.sparsity)

    @property
    def needs_calibration(self) -> bool:
        return self.method != "magnitude"

    def resolved(self) -> "PruneConfig":
        """Validate and fill method-dependent defaults."""
        if self.method not in METHODS:
            raise ConfigError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")
        pattern = self.parsed_pattern
        if not pattern.is_nm:
            check_sparsity(self.sparsity)
        base = self.base
        if self.method in BASES:
            base = base or "wanda"
            if base not in BASES[self.method]:
                raise ConfigError(
                    f"{self.method} cannot build on '{base}': choose one of {', '.join(BASES[self.method])}."
                )
        elif base not in (None, self.method):
            raise ConfigError(f"--base only applies to dsnot and owl, not {self.method}.")
        else:
            base = None
        for name, choices in (("dsnot_sublayers", SUBLAYERS), ("dsnot_rule", DSNOT_RULES),
                              ("dsnot_sparsegpt_init", DSNOT_SPARSEGPT_INIT),
                              ("dsnot_threshold_scale", DSNOT_THRESHOLD_SCALE), ("owl_nm_rule", OWL_NM_RULES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got '{getattr(self, name)}'.")
        if self.propagate not in PROPAGATION:
            raise ConfigError(f"propagate must be one of {PROPAGATION}, got '{self.propagate}'.")
        for name in ("sparsegpt_blocksize", "batch_size", "dsnot_cycles"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer.")
        if self.recon_tokens < 0 or self.sparsegpt_damp < 0 or self.dsnot_threshold < 0:
            raise ConfigError("recon_tokens, sparsegpt_damp and dsnot_threshold must not be negative.")
        owl_m = self.owl_m if self.owl_m is not None else (6.0 if pattern.is_nm else 5.0)
        owl_lambda = self.owl_lambda if self.owl_lambda is not None else (2.0 if pattern.is_nm else 0.08)
        if owl_m <= 0 or owl_lambda < 0:
            raise ConfigError("OWL needs M > 0 and lambda >= 0.")
        return replace(self, base=base, owl_m=owl_m, owl_lambda=owl_lambda, pattern=str(pattern))

    def as_dict(self) -> dict:
        return asdict(self)
