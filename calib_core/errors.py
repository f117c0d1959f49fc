"""Errors a user can act on. Each message says what was wrong and what to do instead."""


class CalibLabError(Exception):
    """Base class: anything raised on purpose by calib_core."""


class ModelLoadError(CalibLabError):
    """A model spec could not be resolved or loaded (unknown id, offline hub, bad folder)."""


class UnsupportedModelError(CalibLabError):
    """The model is not a decoder-only causal LM whose blocks we know how to find."""


class SourceError(CalibLabError):
    """A calibration or evaluation text source is malformed, empty or too small."""


class ConfigError(CalibLabError):
    """An invalid pruning configuration (sparsity, N:M pattern, method options)."""


class InsufficientMemoryError(CalibLabError):
    """The run's memory estimate exceeds what the device has available."""


class PruningCancelled(CalibLabError):
    """The caller asked the work to stop (a prune leaves the model partially pruned)."""


class OutputError(CalibLabError):
    """An output destination (save folder, report, export) is unusable, or writing it failed."""


class RunNotFoundError(CalibLabError):
    """No run with that id in the run store."""


class NotEnoughDataError(CalibLabError):
    """Too few finished runs, seeds or sources for a table, a test or a figure (not a user mistake)."""


class MissingDependencyError(CalibLabError):
    """An optional package (ray, lm-eval, kaleido) is not installed; the message says how to get it."""


class AccessError(CalibLabError):
    """A shared (exposed) app refused a path or setting outside what visitors may reach."""


class DeviceError(ConfigError):
    """A device string names no device of this machine (unknown name, no CUDA, a missing GPU index)."""
