"""Where a result came from: library versions, the git commit, the platform, peak memory."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from . import __version__


def environment_versions() -> dict:
    import transformers

    versions = {
        "calib_core": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    return versions


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory() -> dict:
    import resource

    peak = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return peak
