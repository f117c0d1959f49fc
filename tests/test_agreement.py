"""Mask agreement (Jaccard of kept weights) between stored run masks."""

import copy

import pytest
import torch

from calib_core.errors import ConfigError, NotEnoughDataError
from calib_core.metrics.agreement import block_agreement, mask_agreement, save_masks
from calib_core.models import decoder_blocks, prunable_modules, weight_matrix
from tests.tiny import tiny_model


def _randomly_zero(model, keep_probability, seed):
    generator = torch.Generator().manual_seed(seed)
    for block in decoder_blocks(model):
        for module in prunable_modules(block).values():
            w = weight_matrix(module)
            w.mul_((torch.rand(w.shape, generator=generator) < keep_probability).to(w.dtype))


def _kept(model):
    return {(b, n): weight_matrix(m) != 0 for b, block in enumerate(decoder_blocks(model))
            for n, m in prunable_modules(block).items()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # gpt2: Conv1D weights are stored transposed
def test_jaccard_matches_brute_force(tmp_path, family):
    a = tiny_model(family)
    b = copy.deepcopy(a)
    _randomly_zero(a, 0.5, 1)
    _randomly_zero(b, 0.4, 2)
    table = mask_agreement(save_masks(a, tmp_path / "a.npz"), save_masks(b, tmp_path / "b.npz"))
    kept_a, kept_b = _kept(a), _kept(b)
    for row in table.itertuples():
        x, y = kept_a[(row.block, row.module)], kept_b[(row.block, row.module)]
        assert row.jaccard == pytest.approx(int((x & y).sum()) / int((x | y).sum()), abs=1e-12)
        assert row.kept_a == int(x.sum()) and row.weights == x.numel()
    assert len(table) == len(kept_a)
    pooled = block_agreement(table)
    block0 = [k for k in kept_a if k[0] == 0]
    both = sum(int((kept_a[k] & kept_b[k]).sum()) for k in block0)
    either = sum(int((kept_a[k] | kept_b[k]).sum()) for k in block0)
    assert pooled.jaccard[0] == pytest.approx(both / either)


def test_identical_and_disjoint_masks(tmp_path):
    a = tiny_model("llama")
    _randomly_zero(a, 0.5, 3)
    same = mask_agreement(save_masks(a, tmp_path / "a.npz"), save_masks(a, tmp_path / "a2.npz"))
    assert (same.jaccard == 1.0).all()
    b = copy.deepcopy(a)
    for block in decoder_blocks(b):  # keep exactly what a pruned: disjoint kept sets
        for module in prunable_modules(block).values():
            w = weight_matrix(module)
            w.copy_(torch.where(w == 0, torch.ones_like(w), torch.zeros_like(w)))
    disjoint = mask_agreement(tmp_path / "a.npz", save_masks(b, tmp_path / "b.npz"))
    assert (disjoint.jaccard == 0.0).all()


def test_runs_of_different_models_are_refused(tmp_path):
    a, b = tiny_model("llama"), tiny_model("opt")
    with pytest.raises(ConfigError, match="same modules"):
        mask_agreement(save_masks(a, tmp_path / "a.npz"), save_masks(b, tmp_path / "b.npz"))
    with pytest.raises(NotEnoughDataError, match="No stored masks"):
        mask_agreement(tmp_path / "a.npz", tmp_path / "missing.npz")
