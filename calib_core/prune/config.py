"""A pruning run's settings, validated before any work starts.

`PruneConfig` is a frozen dataclass: the method, its sparsity, pattern and base (`Target`), every method's
options, inherited from the options class each method declares where it lives (`SparseGPTOptions` in
prune/sparsegpt.py, ...; prune/options.py), the engine's options and the device. A method's setting is
declared once, as a field with its kind and bounds, and is a config field, a CLI flag and a Prune page widget;
a new method with options adds its class to PruneConfig's bases (a test checks that the fields and the
registry's options agree)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..devices import resolve_device
from ..errors import ConfigError
from .dsnot import DSnoTOptions
from .masks import Pattern, check_sparsity, parse_pattern
from .methods import METHODS, all_options
from .options import EngineOptions
from .owl import OWLOptions
from .ria import RIAOptions
from .sparsegpt import SparseGPTOptions

# Calibration samples per block forward on a GPU: one sample leaves a GPU mostly idle; the statistics
# (sums over tokens) are the same up to rounding.
GPU_BATCH_SIZE = 8


@dataclass(frozen=True)
class Target:
    """What a run prunes to, and with which method."""

    method: str = "wanda"
    sparsity: float = 0.5  # ignored for N:M patterns, where sparsity is N/M
    pattern: str = "unstructured"
    base: str | None = None  # a refiner's or allocator's base method; default its first


@dataclass(frozen=True)
class Device:
    device: str = "auto"  # where the run computes; checked when the config is resolved


# Bases in reverse field order: a dataclass lists its bases' fields from the last base to the first.
@dataclass(frozen=True)
class PruneConfig(Device, EngineOptions, OWLOptions, DSnoTOptions, RIAOptions, SparseGPTOptions, Target):
    """What one pruning run does: method, sparsity or N:M pattern, base, every method's and the engine's
    options, device."""

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
