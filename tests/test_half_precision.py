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


def _without_half_arithmetic(monkeypatch):
    from calib_core import devices, half_matmul

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    return half_matmul


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_linear_without_the_cpus_arithmetic_multiplies_in_float32_and_rounds(monkeypatch, dtype):
    half_matmul = _without_half_arithmetic(monkeypatch)
    torch.manual_seed(0)
    layer = torch.nn.Linear(576, 384).to(dtype)
    x = torch.randn(64, 576).to(dtype)
    native = layer(x)
    assert half_matmul.multiply_half_in_float32(layer, dtype) == 1
    assert isinstance(layer, half_matmul.HalfViaFloat32Linear)
    out = layer(x)
    # Written from the description: float32 products and sums of the half values, rounded once to the dtype.
    reference = (x.double() @ layer.weight.double().T + layer.bias.double()).float().to(dtype)
    assert out.dtype == dtype
    assert (out == reference).float().mean() >= 0.99  # a float32 sum may round the other way near a tie
    assert (out == native).float().mean() >= 0.99  # torch's own half kernel: the same arithmetic
    assert torch.equal(layer.float()(x.float()), torch.nn.functional.linear(x.float(), layer.weight.float(),
                                                                            layer.bias.float()))


def test_only_plain_linears_of_a_half_model_on_a_cpu_without_its_arithmetic_are_routed(monkeypatch):
    half_matmul = _without_half_arithmetic(monkeypatch)

    class QuantisedLinear(torch.nn.Linear):  # as bitsandbytes' layers are: their own forward stays
        pass

    model = tiny_model(seed=3).to(torch.bfloat16)
    model.extra = QuantisedLinear(4, 4)
    plain = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert half_matmul.multiply_half_in_float32(tiny_model().float(), torch.float32) == 0
    assert half_matmul.multiply_half_in_float32(model, torch.bfloat16) == plain > 0
    assert type(model.extra) is QuantisedLinear
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True, raising=False)
    assert half_matmul.multiply_half_in_float32(tiny_model().half(), torch.float16) == 0  # native: unchanged


def test_a_routed_bf16_model_prunes_and_predicts_as_the_native_kernel_does(monkeypatch):
    import copy

    half_matmul = _without_half_arithmetic(monkeypatch)
    ids = random_ids(8, 32)
    native, routed = tiny_model(seed=1).to(torch.bfloat16), tiny_model(seed=1).to(torch.bfloat16)
    half_matmul.multiply_half_in_float32(routed, torch.bfloat16)
    seen = []
    first = next(m for m in routed.modules() if isinstance(m, torch.nn.Linear))
    handle = first.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    with torch.no_grad():
        native_logits, routed_logits = native(ids).logits.float(), routed(ids).logits.float()
    handle.remove()
    assert seen == [torch.bfloat16]  # hooks (the engine's statistics) still see the layer's bf16 output
    assert torch.allclose(routed_logits, native_logits, rtol=0.05, atol=0.05)
    twin = copy.deepcopy(routed)  # the engine copies models; the routing goes with the copy
    assert all(type(m) is not torch.nn.Linear for m in twin.modules() if isinstance(m, torch.nn.Linear))
    prune_model(native, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.5))
    prune_model(routed, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.5))
    agree = total = 0
    for name, weight in _weights(routed).items():
        agree += int(((weight == 0) == (_weights(native)[name] == 0)).sum())
        total += weight.numel()
    assert agree / total >= 0.99, agree / total


def test_load_model_routes_a_bf16_load_on_a_cpu_without_bf16_and_records_say_so(tmp_path, monkeypatch):
    from calib_core.models import load_model
    from calib_core.provenance import environment_versions
    from tests.tiny import save_tiny_folder

    half_matmul = _without_half_arithmetic(monkeypatch)
    folder = save_tiny_folder(tmp_path / "tiny")
    bf16 = load_model(str(folder), dtype="bfloat16").model
    assert any(isinstance(m, half_matmul.HalfViaFloat32Linear) for m in bf16.modules())
    assert not any(isinstance(m, half_matmul.HalfViaFloat32Linear)
                   for m in load_model(str(folder), dtype="float32").model.modules())
    assert environment_versions()["cpu_half_arithmetic"] == "none"
    from calib_core import devices

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert environment_versions()["cpu_half_arithmetic"] == "bfloat16"
    assert not any(isinstance(m, half_matmul.HalfViaFloat32Linear)
                   for m in load_model(str(folder), dtype="bfloat16").model.modules())
