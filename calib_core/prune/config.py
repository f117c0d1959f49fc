"""A pruning run's settings, validated before any work starts.

`PruneConfig` is a frozen dataclass: the method, its sparsity, pattern and base, the device, and one
field per registry option (prune/methods.py), in registry order, each with the option's default. So
a method's settings are declared once, with their kinds and bounds, and a new method's options are
config fields (and CLI flags, and Prune page widgets) without an edit here."""

from __future__ import annotations

from dataclasses import asdict, field, make_dataclass, replace

from ..devices import resolve_device
from ..errors import ConfigError
from .masks import Pattern, check_sparsity, parse_pattern
from .methods import METHODS, all_options

# Calibration samples per block forward on a GPU: one sample leaves a GPU mostly idle; the statistics
# (sums over tokens) are the same up to rounding.
GPU_BATCH_SIZE = 8


class _Settings:
    """PruneConfig's behaviour (its fields come from the registry, below)."""

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

    def resolved(self) -> PruneConfig:
        """Validated, with method-dependent defaults filled and the batch size chosen for the device."""
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
        # Every option is checked and filled, whatever the method: records and sweep keys state them all.
        values = {o.field: o.resolve(getattr(self, o.field), pattern.is_nm) for o in all_options()}
        device = resolve_device(self.device)  # a device this machine lacks is refused before any work
        values["batch_size"] = int(values["batch_size"]) or (1 if device.type == "cpu" else GPU_BATCH_SIZE)
        return replace(self, base=base, pattern=str(pattern), **values)

    def as_dict(self) -> dict:
        return asdict(self)


PruneConfig = make_dataclass(
    "PruneConfig",
    [("method", str, field(default="wanda")),
     ("sparsity", float, field(default=0.5)),  # ignored for N:M patterns, where sparsity is N/M
     ("pattern", str, field(default="unstructured")),
     ("base", "str | None", field(default=None)),  # a refiner's or allocator's base method; default its first
     *((o.field, o.kind if o.default is not None else f"{o.kind.__name__} | None", field(default=o.default))
       for o in all_options()),
     ("device", str, field(default="auto"))],
    bases=(_Settings,), frozen=True)
PruneConfig.__module__ = __name__  # pickles (queued jobs, Ray tasks) find it here
PruneConfig.__doc__ = ("What one pruning run does: method, sparsity or N:M pattern, base, device, and every "
                       "registry option (prune/methods.py).")
