"""What every calibration strategy is made of: its settings, the context it selects in, what it returns, and
its registry entry (Strategy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...errors import ConfigError

RANDOM = "random"
SELF_CALIBRATION = "self-calibration"


@dataclass(frozen=True)
class Setting:
    """One strategy setting: its name (a key of the run's strategy_options), default and bounds."""

    name: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value in this setting's type, or a ConfigError naming the setting and its range."""
        kind = type(self.default)
        try:
            if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
                raise ValueError
            value = kind(value) if kind is not str else str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Strategy setting {self.name} must be a{'n integer' if kind is int else ' number'}, "
                              f"got {value!r}.") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"Strategy setting {self.name} must be one of {', '.join(self.choices)}, got {value!r}.")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"Strategy setting {self.name} must be in [{self.low}, {self.high}], got {value}.")
        return value


POOL_FACTOR = Setting("pool_factor", 10, "candidate windows per calibration window (the pool is pool_factor x "
                      "nsamples windows; 1 keeps the whole pool)", low=1, high=1000)


SCORE_BATCH = Setting("score_batch_size", 8, "windows per dense forward while scoring the pool", low=1, high=1024)


@dataclass
class Selection:
    """What a strategy returns: windows (pool rows, or windows it made) and what it ranked them by."""

    ids: torch.Tensor
    lengths: list[int]
    chosen: list[int] | None = None  # indices in the pool
    scores: list[float] | None = None  # the score of each chosen candidate, in chosen order
    score: str | None = None  # what the scores are
    pool_scores: list[float] | None = None  # every candidate's score, when the ranking used them all
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str  # one line for pickers
    explain: str  # a few sentences for the Calibration data page
    needs_model: bool
    uses_pool: bool  # draws a candidate pool from the run's source
    settings: tuple[Setting, ...]
    select: Callable | None  # (context: SelectionContext) -> Selection; None for random
    # Raised when what the strategy does changes: sweep point keys name it (from 1), so runs of an earlier
    # version are never taken for runs of this one.
    revision: int = 0


@dataclass
class SelectionContext:
    """What a strategy may use: the pool (pool strategies), the model and tokenizer, its settings."""

    tokenizer: object
    nsamples: int
    seqlen: int
    seed: int
    options: dict
    source: str
    pool_ids: torch.Tensor | None = None
    pool_lengths: list[int] | None = None
    model: object | None = None
