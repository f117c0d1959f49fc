"""The GPU paths: checks that need CUDA are skipped, with that reason, where there is none; the GPU
check script says clearly when it cannot run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calib_core.prune import PruneConfig, prune_model
from tests.tiny import random_ids, tiny_model

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_the_gpu_check_says_there_is_no_cuda_and_exits_2():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr, done.stderr


@needs_cuda
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruning_on_cuda_gives_the_cpu_masks(method):
    ids = random_ids(4, 32)
    masks = {}
    for device in ("cpu", "cuda"):
        model = tiny_model(seed=3)
        prune_model(model, ids, PruneConfig(method=method, sparsity=0.5, device=device))
        masks[device] = torch.cat([p.detach().cpu().flatten() == 0 for n, p in model.named_parameters()
                                   if "layers" in n and n.endswith("proj.weight")])
    agreement = (masks["cpu"] == masks["cuda"]).float().mean().item()
    assert agreement == 1.0 if method == "wanda" else agreement >= 0.99, agreement
