"""What a pruning run reports while it works (and keeps as its result). Plain dataclasses, so
the CLI, the app and the run store consume the same objects."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StageEvent:
    """Coarse progress: stage in {'capture', 'outlier_scan', 'prune'}, step of total, and when (`at`,
    seconds since the epoch: a reader in another process can time each phase)."""

    stage: str
    step: int
    total: int
    seconds: float
    kind: str = "stage"
    at: float = field(default_factory=time.time)


@dataclass
class ModuleRecord:
    block: int
    name: str
    shape: list[int]
    target_sparsity: float
    pattern: str
    sparsity: float
    recon_error: float | None  # ||W X - W' X||_F on the measured calibration tokens
    rel_recon_error: float | None  # the same divided by the dense output norm ||W X + b||_F
    seconds: float
    kind: str = "module"


@dataclass
class BlockRecord:
    index: int
    name: str
    target_sparsity: float
    pattern: str
    sparsity: float
    outlier_ratio: float | None
    seconds: float
    modules: list[ModuleRecord] = field(default_factory=list)
    kind: str = "block"

    @property
    def max_rel_error(self) -> float | None:
        """The worst module's relative reconstruction error (None when it was not measured)."""
        errors = [m.rel_recon_error for m in self.modules if m.rel_recon_error is not None]
        return max(errors) if errors else None


@dataclass
class AllocationEvent:
    """OWL's plan: per-block outlier ratio D_l (%) and the sparsity (or N:M) each block gets.
    `planned_sparsity` is the mean of the blocks' targets: for mixed N:M with the authors' rule it
    can differ from the requested target."""

    outlier_ratios: list[float]
    target_sparsities: list[float]
    patterns: list[str]
    planned_sparsity: float | None = None
    kind: str = "allocation"


def blocks_frame(blocks: list[BlockRecord]):
    """One row per pruned block: target vs achieved sparsity, OWL outlier ratio, worst error, time."""
    import pandas as pd

    return pd.DataFrame({
        "block": [b.index for b in blocks], "target": [b.target_sparsity for b in blocks],
        "pattern": [b.pattern for b in blocks], "achieved": [b.sparsity for b in blocks],
        "outlier_ratio": [b.outlier_ratio for b in blocks], "max_rel_error": [b.max_rel_error for b in blocks],
        "seconds": [b.seconds for b in blocks]})


def modules_frame(modules: list[ModuleRecord]):
    """One row per pruned module: block, name, relative reconstruction error."""
    import pandas as pd

    return pd.DataFrame([(m.block, m.name, m.rel_recon_error) for m in modules], columns=["block", "module", "error"])
