"""Where a result came from: library versions, the git commit, the platform, peak memory."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from . import __version__
from .half_matmul import half_arithmetic_names


def environment_versions() -> dict:
    import transformers

    versions = {
        "calib_core": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": cpu_kind(),
        # Without them a half-precision run multiplies in float32 and rounds (half_matmul): same sums, other order.
        "cpu_half_arithmetic": half_arithmetic_names(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        # CPU results depend on it in the last bits (summation order), so a run names it.
        "torch_threads": torch.get_num_threads(),
    }
    return versions


def cpu_kind() -> str:
    """The CPU's vendor and the instruction set torch's kernels use (e.g. 'AuthenticAMD AVX512'): float
    results, and so masks computed from activations, can differ in the last bits between kinds."""
    vendor = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()}"


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory(device: str | torch.device | None = None) -> dict:
    """This process's peak RSS, and on a CUDA `device` its peak allocation since the last
    devices.reset_peak_memory (each run resets it at its start)."""
    peak = {"peak_rss_bytes": peak_rss()}
    if device is not None and torch.device(device).type == "cuda":
        peak["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        peak["cuda_device"] = str(device)
    return peak


def peak_rss() -> int:
    """This process's own peak resident memory. Linux's VmHWM belongs to the process's memory map;
    ru_maxrss instead carries over the peak of the process that started us (across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
