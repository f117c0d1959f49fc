"""A method's options as dataclass fields: each method declares its options where it lives (prune/<name>.py) as a
frozen dataclass of fields made by `option`, which carry the kind, bounds, help and label; `declared_options`
turns such a class into the registry's `Option`s (prune/methods.py), and PruneConfig (prune/config.py) inherits
every method's class, so an option is one written field that grep, editors and type checkers find. The engine's
own options, whatever the method, are `EngineOptions`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import ConfigError


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


def option(default, help: str, kind: type | None = None, choices: tuple[str, ...] | None = None, **bounds):
    """A dataclass field that is a user-settable option: its default, help, kind (the default's type unless
    given: needed where the default is None), choices, and Option's bounds, auto defaults and label."""
    kind = kind or (str if choices else type(default))
    return field(default=default, metadata={"option": dict(help=help, kind=kind, choices=choices, **bounds)})


def declared_options(options_class) -> tuple[Option, ...]:
    """The Options of a dataclass whose fields are made by `option`, in field order."""
    return tuple(Option(f.name, default=f.default, **f.metadata["option"]) for f in fields(options_class)
                 if "option" in f.metadata)


@dataclass(frozen=True)
class EngineOptions:
    """Settings of the engine itself, whatever the method."""

    propagate: str = option("pruned", "feed the next block the pruned (standard) or the dense outputs",
                            choices=("pruned", "dense"))
    batch_size: int = option(0, "calibration samples per block forward (0: by device, 1 on the CPU, 8 on CUDA)",
                             low=0, high=1024)
    recon_tokens: int = option(512, "tokens per module for the reconstruction error", low=0, high=1 << 20,
                               label="reconstruction tokens")
