"""Moved: the worker is `python -m calib_core.jobs.worker JOB_FOLDER`. Kept for one release so that
a server started before an upgrade can still start workers for its queued jobs."""

import sys
from pathlib import Path

from .jobs.worker import run

if __name__ == "__main__":
    run(Path(sys.argv[1]))
