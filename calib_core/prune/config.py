"""A pruning run's settings, validated before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..devices import resolve_device
from ..errors import ConfigError
from .masks import Pattern, check_sparsity, parse_pattern
from .methods import METHODS, all_options


# Calibration samples per block forward on a GPU: one sample leaves a GPU mostly idle; the statistics
# (sums over tokens) are the same up to rounding.
GPU_BATCH_SIZE = 8


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
    batch_size: int = 0  # calibration samples per block forward; 0: by device, 1 on the CPU (fastest there), 8 on CUDA
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
        return METHODS[self.method].needs_calibration

    def resolved(self) -> "PruneConfig":
        """Validate and fill method-dependent defaults."""
        if self.method not in METHODS:
            raise ConfigError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")
        pattern = self.parsed_pattern
        if not pattern.is_nm:
            check_sparsity(self.sparsity)
        bases = METHODS[self.method].bases
        base = self.base
        if bases:
            base = base or bases[0]
            if base not in bases:
                raise ConfigError(f"{self.method} cannot build on '{base}': choose one of {', '.join(bases)}.")
        elif base not in (None, self.method):
            raise ConfigError(f"--base only applies to {' and '.join(n for n, m in METHODS.items() if m.bases)}, "
                              f"not {self.method}.")
        else:
            base = None
        for option in all_options():
            if option.choices and getattr(self, option.field) not in option.choices:
                raise ConfigError(f"{option.field} must be one of {', '.join(option.choices)}, "
                                  f"got '{getattr(self, option.field)}'.")
        for name in ("sparsegpt_blocksize", "dsnot_cycles"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer.")
        if int(self.batch_size) < 0:
            raise ConfigError("batch_size must be a positive integer (or 0: chosen by device).")
        device = resolve_device(self.device)  # a device this machine lacks is refused before any work
        batch_size = int(self.batch_size) or (1 if device.type == "cpu" else GPU_BATCH_SIZE)
        if self.recon_tokens < 0 or self.sparsegpt_damp < 0 or self.dsnot_threshold < 0:
            raise ConfigError("recon_tokens, sparsegpt_damp and dsnot_threshold must not be negative.")
        owl_m = self.owl_m if self.owl_m is not None else (6.0 if pattern.is_nm else 5.0)
        owl_lambda = self.owl_lambda if self.owl_lambda is not None else (2.0 if pattern.is_nm else 0.08)
        if owl_m <= 0 or owl_lambda < 0:
            raise ConfigError("OWL needs M > 0 and lambda >= 0.")
        return replace(self, base=base, owl_m=owl_m, owl_lambda=owl_lambda, pattern=str(pattern), batch_size=batch_size)

    def as_dict(self) -> dict:
        return asdict(self)
