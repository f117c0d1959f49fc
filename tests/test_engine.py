"""The layer-wise engine end to end on tiny models of every supported family."""

import threading

import pytest
import torch

from calib_core.errors import ConfigError, InsufficientMemoryError, PruningCancelled
from calib_core.models import decoder_blocks, prunable_modules, weight_matrix
from calib_core.prune import PruneConfig, prune_model
from tests.tiny import FAMILY_CONFIGS, naive_block_by_block, random_ids, tiny_model


def zero_fractions(model):
    return {
        (i, name): float((weight_matrix(m) == 0).float().mean())
        for i, block in enumerate(decoder_blocks(model))
        for name, m in prunable_modules(block).items()
    }


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_every_family_reaches_target_on_every_module(family, method):
    model = tiny_model(family)
    embed_before = model.get_input_embeddings().weight.clone()
    head_before = model.get_output_embeddings().weight.clone()
    result = prune_model(model, random_ids(4, 16), PruneConfig(device="cpu", method=method, sparsity=0.5))
    fractions = zero_fractions(model)
    assert len(fractions) >= 4 * len(decoder_blocks(model))
    for key, fraction in fractions.items():
        assert fraction == pytest.approx(0.5, abs=1e-3), key
    assert torch.equal(model.get_input_embeddings().weight, embed_before)
    assert torch.equal(model.get_output_embeddings().weight, head_before)
    assert result.overall_sparsity == pytest.approx(0.5, abs=1e-3)
    with torch.inference_mode():
        assert torch.isfinite(model(random_ids(1, 16)).logits).all()


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "gemma3_text"])
def test_nm_pattern_end_to_end(family):
    model = tiny_model(family)
    prune_model(model, random_ids(3, 16), PruneConfig(device="cpu", method="wanda", pattern="2:4"))
    for block in decoder_blocks(model):
        for module in prunable_modules(block).values():
            W = weight_matrix(module)
            assert ((W == 0).view(W.shape[0], -1, 4).sum(2) == 2).all()


def naive_wanda(model, ids, sparsity):
    """Independent reference: sort each row of |W| * sqrt(scaler) stably and zero the lowest scores."""
    def prune_block(modules, scaler):
        for name, module in modules.items():
            W = weight_matrix(module)
            scores = W.abs().double() * torch.sqrt(scaler[name])
            W.scatter_(1, torch.argsort(scores, dim=1, stable=True)[:, :int(W.shape[1] * sparsity)], 0.0)

    naive_block_by_block(model, ids, prune_block)
    return model


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "gpt_neox"])
def test_engine_wanda_equals_naive_reimplementation(family):
    ids = random_ids(5, 20, seed=7)
    engine = tiny_model(family, seed=3)
    naive = tiny_model(family, seed=3)
    prune_model(engine, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.6, batch_size=2))
    naive_wanda(naive, ids, 0.6)
    for (e_name, e), (n_name, n) in zip(engine.named_parameters(), naive.named_parameters()):
        assert torch.equal(e == 0, n == 0), e_name


def test_dense_propagation_is_an_option_that_changes_later_blocks():
    ids = random_ids(4, 16)
    pruned = tiny_model("llama", num_hidden_layers=3)
    dense = tiny_model("llama", num_hidden_layers=3)
    prune_model(pruned, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.7))
    prune_model(dense, ids, PruneConfig(device="cpu", method="wanda", sparsity=0.7, propagate="dense"))
    masks = [[(weight_matrix(m) == 0) for m in prunable_modules(b).values()] for b in decoder_blocks(pruned)]
    dense_masks = [[(weight_matrix(m) == 0) for m in prunable_modules(b).values()] for b in decoder_blocks(dense)]
    assert all(torch.equal(a, b) for a, b in zip(masks[0], dense_masks[0]))  # block 0 sees the same inputs
    assert not all(torch.equal(a, b) for a, b in zip(masks[2], dense_masks[2]))


def test_events_stream_per_module_and_block():
    events = []
    model = tiny_model("llama")
    prune_model(model, random_ids(3, 16), PruneConfig(device="cpu", method="sparsegpt", sparsity=0.5), on_event=events.append)
    modules = [e for e in events if e.kind == "module"]
    blocks = [e for e in events if e.kind == "block"]
    assert len(blocks) == 2 and len(modules) == 14
    assert all(0 < m.rel_recon_error < 1 and m.recon_error > 0 and m.seconds >= 0 for m in modules)
    assert [b.index for b in blocks] == [0, 1]
    assert events[0].kind == "stage" and events[0].stage == "capture"


def test_owl_events_report_allocation_and_outliers():
    events = []
    model = tiny_model("llama", num_hidden_layers=4)
    result = prune_model(model, random_ids(4, 16), PruneConfig(device="cpu", method="owl", sparsity=0.5, owl_m=3),
                         on_event=events.append)
    allocation = [e for e in events if e.kind == "allocation"][0]
    assert sum(allocation.target_sparsities) / 4 == pytest.approx(0.5, abs=1e-6)
    assert [b.outlier_ratio for b in result.blocks] == allocation.outlier_ratios
    for block, target in zip(result.blocks, allocation.target_sparsities):
        assert block.sparsity == pytest.approx(target, abs=1 / 64)


def test_dsnot_end_to_end_keeps_row_sparsity():
    model = tiny_model("qwen2")
    prune_model(model, random_ids(4, 16), PruneConfig(device="cpu", method="dsnot", sparsity=0.5, dsnot_threshold=0.0))
    for block in decoder_blocks(model):
        for module in prunable_modules(block).values():
            W = weight_matrix(module)
            assert ((W == 0).sum(1) == W.shape[1] // 2).all()


def test_cancel_stops_between_modules():
    class CancelAfter:
        def __init__(self):
            self.modules = 0

        def is_set(self):
            return self.modules >= 3

    token = CancelAfter()

    def on_event(event):
        if event.kind == "module":
            token.modules += 1

    model = tiny_model("llama")
    with pytest.raises(PruningCancelled):
        prune_model(model, random_ids(2, 16), PruneConfig(device="cpu", method="wanda"), on_event=on_event, cancel=token)
    assert token.modules == 3


def test_cancel_with_threading_event():
    event = threading.Event()
    event.set()
    with pytest.raises(PruningCancelled):
        prune_model(tiny_model("llama"), random_ids(2, 16), PruneConfig(device="cpu"), cancel=event)


def test_magnitude_runs_without_calibration_and_others_refuse():
    model = tiny_model("llama")
    result = prune_model(model, None, PruneConfig(device="cpu", method="magnitude", sparsity=0.4))
    assert result.overall_sparsity == pytest.approx(0.4, abs=1e-3)
    with pytest.raises(ConfigError, match="needs calibration"):
        prune_model(tiny_model("llama"), None, PruneConfig(device="cpu", method="wanda"))


@pytest.mark.parametrize(
    "config",
    [
        PruneConfig(device="cpu", sparsity=1.0),
        PruneConfig(device="cpu", sparsity=-0.1),
        PruneConfig(device="cpu", pattern="4:2"),
        PruneConfig(device="cpu", method="sparse"),
        PruneConfig(device="cpu", method="owl", base="dsnot"),
        PruneConfig(device="cpu", method="wanda", base="sparsegpt"),
        PruneConfig(device="cpu", method="dsnot", dsnot_sublayers="ffn"),
        PruneConfig(device="cpu", batch_size=-1),
        PruneConfig(device="gpu"),
        PruneConfig(device="CUDA"),
        PruneConfig(device="cuda:1"),  # no GPU here; on a one-GPU machine: no second one
    ],
)
def test_invalid_configs_are_refused_before_work(config):
    with pytest.raises(ConfigError):
        prune_model(tiny_model("llama"), random_ids(2, 8), config)


def test_run_that_cannot_fit_is_refused_with_estimate(monkeypatch):
    monkeypatch.setattr("calib_core.prune.memory.available_memory", lambda device: 1024)
    with pytest.raises(InsufficientMemoryError, match="calibration buffers"):
        prune_model(tiny_model("llama"), random_ids(2, 8), PruneConfig(device="cpu"))
