"""Compute devices: what a device string names (checked before any work), one key per physical device
for the job queue, and how much memory a device has for us."""

from __future__ import annotations

import contextlib
import re

import torch

from .errors import DeviceError

DEVICE_CHOICES = "auto (CUDA when present, else the CPU), cpu, cuda (the current CUDA device) or cuda:N"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def _available() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ", ".join(["cpu"] + [f"cuda:{i}" for i in range(count)])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a device string names, with its CUDA index always given ('cuda' is the current
    CUDA device, usually cuda:0), so that one physical device has one name. Anything else, or a CUDA
    device this machine lacks, raises a DeviceError that lists what is available."""
    text = str(device).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        hint = " (device names are lower case)" if text.lower() != text and (
            text.lower() in ("auto", "cpu") or _CUDA.fullmatch(text.lower())) else ""
        raise DeviceError(f"Unknown device '{device}'{hint}: use {DEVICE_CHOICES}. Available here: {_available()}.")
    if not torch.cuda.is_available():
        raise DeviceError(f"Device '{device}' requested but CUDA is not available on this machine "
                          f"(available: cpu). Use --device cpu or auto.")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise DeviceError(f"Device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s) (available: {_available()}).")
    return torch.device("cuda", index)


def device_key(device: str | torch.device = "auto") -> str:
    """The job queue's name of the physical device a device string names: 'auto', 'cuda' and 'cuda:0'
    on a one-GPU machine are all 'cuda:0', so two jobs never share it."""
    return str(resolve_device(device))


def free_bytes(device: torch.device) -> int:
    """Memory a new allocation on `device` can take: on CUDA the driver's free memory plus what our own
    caching allocator holds unused (mem_get_info counts that cache as used); on the CPU the
    system's available memory."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timing around it measures the work (CUDA runs
    asynchronously); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak of CUDA memory (each run or sweep point reports its own); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def model_bytes(model: torch.nn.Module) -> int:
    """What the model's parameters and buffers take in memory."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def fits_whole(model: torch.nn.Module, device: torch.device, working_bytes: int = 0) -> bool:
    """Whether the whole model, plus `working_bytes` of activations, fits in what `device` has free. A
    model already there (or on the CPU, where it already lives) fits."""
    home = next(model.parameters()).device
    if device == home or device.type == "cpu":
        return True
    return model_bytes(model) + working_bytes <= free_bytes(device)


def describe_free(device: torch.device) -> str:
    return f"{free_bytes(device) / 2**30:.2f} GiB free on {device}"


@contextlib.contextmanager
def whole_model_on(model: torch.nn.Module, device: torch.device, working_bytes: int = 0):
    """The whole model on `device` for the block of code, then back where it was; yields the device it
    is on. A model that does not fit in the device's free memory stays where it is (yielded instead):
    the caller says so, or uses a block-by-block path."""
    home = next(model.parameters()).device
    where = device if fits_whole(model, device, working_bytes) else home
    if where != home:
        model.to(where)
    try:
        yield where
    finally:
        if where != home:
            model.to(home)


def native_dtype(device: str | torch.device = "auto") -> str:
    """The fastest dtype the device computes natively: float16 on CUDA (as the pruning methods' authors
    run), bfloat16 on a CPU with bf16 arithmetic (AMX or AVX-512 BF16; on our CPUs 2.8x faster than
    float32 for Wanda with 99.6% of the same kept weights), float32 on any other CPU."""
    if resolve_device(device).type == "cuda":
        return "float16"
    return "bfloat16" if cpu_has_bf16() else "float32"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (torch's own CPU feature probes)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(probe() for probe in probes if probe is not None)
