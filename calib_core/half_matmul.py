"""Half-precision Linear layers on a CPU without half-precision arithmetic.

On a CPU without bf16 (or fp16) instructions torch multiplies half matrices with a slow reference kernel: on
our AVX2 CPU a forward of the bundled model (2 x 256 tokens) took 8.0 s in bfloat16 against 1.0 s in float32.
There a half Linear multiplies its input and weight in float32 and rounds the output to its dtype instead. A
product of two half values is exact in float32 and both kernels sum in float32, so this is the same arithmetic
up to summation order (on a 512x576 by 576x1536 product, 99.99% of the outputs equal torch's bf16 kernel's),
and a Wanda prune runs at float32's speed (bench/half_matmul_bench.py: 14.6 s against 52.3 s with torch's bf16
kernel and 14.0 s in float32; masks keep 99.5% of the kernel's kept weights, summation order moving scores near the
threshold). Everywhere else (float32, a GPU, a CPU with the instructions) the layer is an
ordinary Linear. Run records state whether the CPU had the instructions (provenance: `cpu_half_arithmetic`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HALF = (torch.bfloat16, torch.float16)


def cpu_has_half_arithmetic(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies `dtype` (bfloat16 or float16) with its own instructions."""
    from .devices import cpu_has_bf16

    if dtype == torch.bfloat16:
        return cpu_has_bf16()
    probe = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    return bool(probe and probe())


def half_arithmetic_names() -> str:
    """The half dtypes this CPU multiplies natively, e.g. 'bfloat16, float16', or 'none'."""
    names = [str(dtype).removeprefix("torch.") for dtype in HALF if cpu_has_half_arithmetic(dtype)]
    return ", ".join(names) or "none"


class HalfViaFloat32Linear(nn.Linear):
    """An nn.Linear whose half-precision products on the CPU are computed in float32 and rounded back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in HALF or x.device.type != "cpu":
            return super().forward(x)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)


def multiply_half_in_float32(model: nn.Module, dtype: torch.dtype) -> int:
    """Where this CPU lacks `dtype`'s arithmetic, make every plain nn.Linear of `model` a HalfViaFloat32Linear
    (the same parameters and hooks; subclasses such as quantised layers are left alone). Returns how many."""
    if dtype not in HALF or cpu_has_half_arithmetic(dtype):
        return 0
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    for module in linears:
        module.__class__ = HalfViaFloat32Linear
    return len(linears)
