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


def clean_stale_files() -> None:
    """Remove what killed processes left behind in our folders: half-written temporaries and
    interrupted model conversions. Cheap; the CLI and the app call it when they start."""
    from .assets import remove_stale_conversions
    from .files import clean_stale_temporaries

    for folder in (cache_dir(), cache_dir() / "models", cache_dir() / "corpora", data_dir(), data_dir() / "sets",
                   data_dir() / "masks"):
        clean_stale_temporaries(folder)
    remove_stale_conversions()


def data_dir() -> Path:
    """User data that is not regenerable: saved calibration sets, the run store."""
    path = Path(os.environ.get("CALIB_LAB_DATA") or platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path
