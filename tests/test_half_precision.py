"""Half precision end to end: statistics, Hessians and the SparseGPT/DSnoT arithmetic run in fp32 whatever
the model's dtype; pruned weights go back in the model's dtype; masks differ from an fp32 run only where
rounding moves a score across the threshold."""

import pytest
import torch

from calib_core.models import decoder_blocks, prunable_modules
from calib_core.prune import PruneConfig
from calib_core.prune.engine import prune_model
from calib_core.prune.masks import parse_pattern
from calib_core.prune.sparsegpt import sparsegpt_prune
from tests.tiny import random_ids, tiny_model


def _weights(model) -> dict[str, torch.Tensor]:
    return {f"{b}.{name}": module.weight.detach().clone()
            for b, block in enumerate(decoder_blocks(model)) for name, module in prunable_modules(block).items()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_wanda_masks_in_half_precision_agree_with_fp32(dtype):
    ids = random_ids(8, 32)
    full, half = tiny_model(seed=1), tiny_model(seed=1).to(dtype)
    prune_model(full, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.5))
    prune_model(half, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.5))
    agree = total = 0
    for name, weight in _weights(half).items():
        assert weight.dtype == dtype, name  # written back in the model's dtype
        agree += int(((weight == 0) == (_weights(full)[name] == 0)).sum())
        total += weight.numel()
    assert agree / total >= 0.99, agree / total


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "dsnot", "owl"])
def test_every_method_prunes_a_bf16_model_to_finite_bf16_weights(method):
    model = tiny_model(seed=2).to(torch.bfloat16)
    result = prune_model(model, random_ids(6, 32), PruneConfig(device="cpu", method=method, sparsity=0.5))
    for name, weight in _weights(model).items():
        assert weight.dtype == torch.bfloat16 and torch.isfinite(weight).all(), name
    assert abs(result.overall_sparsity - 0.5) < 0.02
    with torch.no_grad():
        assert torch.isfinite(model(random_ids(1, 16)).logits).all()


def test_sparsegpt_stays_finite_on_an_ill_conditioned_hessian_from_bf16_inputs():
    torch.manual_seed(0)
    features = 64
    # Rank 4 inputs with outlier channels 1e4 times the rest (as LLM activations have), one channel
    # dead, all rounded to bf16 as a bf16 model's hooks would see them.
    x = torch.randn(512, 4) @ torch.randn(4, features)
    x[:, :3] *= 1e4
    x[:, 10] = 0
    x = x.to(torch.bfloat16)
    hessian = 2 / x.shape[0] * x.float().T @ x.float()
    assert torch.linalg.cond(hessian) > 1e12  # numerically singular before damping
    weight = torch.randn(32, features).to(torch.bfloat16)
    for pattern in (parse_pattern("unstructured"), parse_pattern("2:4")):
        new_weight, mask = sparsegpt_prune(weight, hessian, 0.5, pattern)
        assert torch.isfinite(new_weight).all()
        assert torch.isfinite(new_weight.to(torch.bfloat16)).all()  # fits the model's dtype too
        assert (new_weight[mask] == 0).all() and abs(mask.float().mean().item() - 0.5) < 0.02
