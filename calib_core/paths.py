"""Where calib_core keeps converted models (cache) and user data (sets, runs).

Both can be overridden with environment variables so tests and CI can use temporary folders.
"""

import os
from pathlib import Path

import platformdirs

APP_NAME = "calib-lab"


def cache_dir() -> Path:
    """Regenerable files: the converted bundled model, parsed builtin corpora."""
    path = Path(os.environ.get("CALIB_LAB_CACHE") or platformdirs.user_cache_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """User data that is not regenerable: saved calibration sets, the run store."""
    path = Path(os.environ.get("CALIB_LAB_DATA") or platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def streamed_scratch_dir() -> Path:
    """Where a streamed run that saves nothing writes its pruned model for the evaluation (removed after)."""
    return cache_dir() / "streamed"
