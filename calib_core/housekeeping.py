"""What killed processes leave behind in our folders, removed when the CLI or the app starts."""

from .assets import remove_stale_conversions
from .files import clean_stale_temporaries
from .paths import cache_dir, data_dir, streamed_scratch_dir


def clean_stale_files() -> None:
    """Remove what killed processes left behind in our folders: half-written temporaries, the scratch
    models of streamed runs and interrupted model conversions. Cheap; the CLI and the app call it when
    they start."""
    for folder in (cache_dir(), cache_dir() / "models", cache_dir() / "corpora", streamed_scratch_dir(), data_dir(),
                   data_dir() / "sets", data_dir() / "masks"):
        clean_stale_temporaries(folder)
    remove_stale_conversions()
