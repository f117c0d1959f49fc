"""Where calib_core keeps converted models (cache) and user data (sets, runs).

Both can be overridden with environment variables so tests and CI can use temporary folders.
"""

import os
from pathlib import Path

APP_NAME = "calib-lab"


def _platform_dir(kind: str) -> str:
    # Imported only when no override is set: the GPU check runs where platformdirs is not installed.
    import platformdirs

    return getattr(platformdirs, f"user_{kind}_dir")(APP_NAME)


def cache_dir() -> Path:
    """Regenerable files: the converted bundled model, parsed builtin corpora."""
    path = Path(os.environ.get("CALIB_LAB_CACHE") or _platform_dir("cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """User data that is not regenerable: saved calibration sets, the run store."""
    path = Path(os.environ.get("CALIB_LAB_DATA") or _platform_dir("data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def streamed_scratch_dir() -> Path:
    """Where a streamed run that saves nothing writes its pruned model for the evaluation (removed after)."""
    return cache_dir() / "streamed"
