"""Run records: everything needed to trace a result back to its config, code, libraries and data.
The report JSON written by the CLI is exactly this record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict
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


def run_record(model_spec: str, model_info: dict, calibration, result, perplexities: list, timings: dict,
               notes: list[str] | None = None) -> dict:
    """The report: config, versions, calibration fingerprint, sparsity, per-block stats, ppl."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"spec": model_spec, **model_info},
        "config": result.config.as_dict() if result else None,
        "versions": environment_versions(),
        "calibration": calibration.describe() if calibration is not None else None,
        "overall_sparsity": result.overall_sparsity if result else None,
        "allocation": asdict(result.allocation) if result and result.allocation else None,
        "blocks": [asdict(b) for b in result.blocks] if result else [],
        "reconstruction_error_tokens": result.config.recon_tokens if result else None,
        "memory_estimate": result.memory_estimate if result else None,
        "perplexity": [p.as_dict() for p in perplexities],
        "timings": timings,
        "memory": peak_memory(),
        "notes": notes or [],
    }


def write_json(path: str | os.PathLike, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2)
    os.replace(tmp, path)
