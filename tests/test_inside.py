"""Inside a layer: the per-channel statistics a run keeps equal an independent recomputation, and the
views (channels, scores, mask difference, across the model) equal direct computations on stored masks."""

import copy

import numpy as np
import pytest
import torch

from calib_core.errors import NotEnoughDataError
from calib_core.metrics import inside
from calib_core.models import decoder_blocks, prunable_modules
from calib_core.prune import PruneConfig
from calib_core.prune.engine import Pruner
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.tiny import random_ids, save_tiny_folder, tiny_model


def reference_channels(dense, pruned, ids) -> dict:
    """Each block's Linear inputs recomputed with full-model forwards (one sample each) through the already
    pruned earlier blocks (copied from the engine's result), in float64: norm, diag H, DSnoT's mean and
    within-sequence variance, as prune/stats.CHANNEL_KINDS defines them."""
    out = {}
    for index, (block, done) in enumerate(zip(decoder_blocks(dense), decoder_blocks(pruned))):
        modules = prunable_modules(block)
        seen = {name: [] for name in modules}
        handles = [m.register_forward_hook(lambda mod, inp, o, name=name: seen[name].append(inp[0][0].double()))
                   for name, m in modules.items()]
        with torch.inference_mode():
            for row in ids:
                dense(input_ids=row[None], use_cache=False)
        for handle in handles:
            handle.remove()
        for name, rows in seen.items():
            x = torch.stack(rows)  # [samples, tokens, in]
            n, tokens = x.shape[0], x.shape[0] * x.shape[1]
            sum_sq = x.square().sum((0, 1))
            out[f"{index}/{name}/norm"] = (sum_sq / n).sqrt()
            out[f"{index}/{name}/hessian_diag"] = 2 * sum_sq / n
            out[f"{index}/{name}/mean"] = x.sum((0, 1)) / n
            out[f"{index}/{name}/variance"] = (x.var(dim=1, unbiased=False) * x.shape[1]).sum(0) / tokens
        block.load_state_dict(done.state_dict())  # the next block sees what the engine propagated
    return out


@pytest.mark.parametrize("method, kinds", [
    ("wanda", {"norm"}), ("sparsegpt", {"norm", "hessian_diag"}), ("ria", {"norm"}),
    ("dsnot", {"norm", "mean", "variance"}), ("owl", {"norm"})])
def test_stored_statistics_equal_what_the_engine_used(method, kinds):
    model = tiny_model()
    dense = copy.deepcopy(model)
    ids = random_ids(4, 20)
    stored = {}
    Pruner(model, PruneConfig(device="cpu", method=method, sparsity=0.5),
           on_channels=lambda index, arrays: stored.update(arrays)).run(ids)
    reference = reference_channels(dense, model, ids)
    modules = [f"{b}/{name}" for b, block in enumerate(decoder_blocks(model)) for name in prunable_modules(block)]
    assert set(stored) == {f"{m}/{kind}" for m in modules for kind in kinds}
    for key, values in stored.items():
        np.testing.assert_allclose(values, reference[key].numpy(), rtol=2e-4, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Wanda on wiki and on code, SparseGPT, RIA and OWL on wiki, and magnitude, of one tiny model."""
    root = tmp_path_factory.mktemp("inside")
    folder = str(save_tiny_folder(root / "tiny"))
    store = RunStore(root / "runs.sqlite")
    made = {}
    for label, method, calib in (("wiki", "wanda", "builtin:wiki"), ("code", "wanda", "builtin:code"),
                                 ("sparsegpt", "sparsegpt", "builtin:wiki"), ("ria", "ria", "builtin:wiki"),
                                 ("owl", "owl", "builtin:wiki"), ("magnitude", "magnitude", None)):
        record = run_prune(RunSpec(model=folder, calib=calib, nsamples=2, seqlen=16,
                                   config=PruneConfig(method=method, sparsity=0.5),
                                   evaluation=EvalSpec(sources=["builtin:wiki"], windows=1)), store=store)
        made[label] = inside.open_run(store, record["run_id"])
    return made


def test_a_run_keeps_its_channel_statistics_beside_its_masks(runs):
    record = runs["sparsegpt"].record
    assert record["channel_stats"]["kinds"] == ["norm", "hessian_diag"]
    assert "Hessian diagonal" in record["channel_stats"]["definitions"]["hessian_diag"]
    with np.load(record["channel_stats"]["path"]) as stored:
        assert len(stored.files) == 2 * len(runs["sparsegpt"].modules())


def test_a_run_without_statistics_says_so(runs):
    magnitude = runs["magnitude"]
    assert "channel_stats" not in magnitude.record
    with pytest.raises(NotEnoughDataError, match="no per-channel statistics"):
        inside.channel_table(magnitude, 0, "self_attn.q_proj")
    old = inside.RunInside({k: v for k, v in runs["wiki"].record.items() if k != "channel_stats"})
    with pytest.raises(NotEnoughDataError, match="made before the lab kept them"):
        old.channel(0, "mlp.down_proj")


def test_channel_view_sorts_marks_outliers_and_compares_two_runs(runs):
    a, b = runs["wiki"], runs["code"]
    table = inside.channel_table(a, 1, "mlp.down_proj", b, m=1.5)
    norm_a, norm_b = a.channel(1, "mlp.down_proj"), b.channel(1, "mlp.down_proj")
    assert list(table["norm_a"]) == sorted(norm_a, reverse=True) and list(table["rank"]) == list(range(1, len(norm_a) + 1))
    assert table["outlier_a"].sum() == int((norm_a > 1.5 * norm_a.mean()).sum())
    np.testing.assert_allclose(table.set_index("channel")["ratio_a_to_b"].sort_index(), norm_a / norm_b)


def test_scores_are_the_methods_own_and_disagreement_with_magnitude_is_direct(runs):
    wiki = runs["wiki"]
    weight, kept = wiki.dense_weight(0, "mlp.up_proj"), wiki.kept(0, "mlp.up_proj")
    score, formula = inside.method_score(wiki, 0, "mlp.up_proj", weight)
    assert "Wanda" in formula
    for row in range(weight.shape[0]):  # block 0 saw the dense model: its mask is Wanda's per-row choice
        assert score[row][kept[row]].min() >= score[row][~kept[row]].max()
    view = inside.score_view(wiki, 0, "mlp.up_proj", sample=300)
    pruned = int((~kept).sum())
    by_magnitude = np.ones(weight.size, dtype=bool)
    by_magnitude[np.argsort(np.abs(weight), axis=None)[:pruned]] = False
    assert view.disagreement == pytest.approx(np.mean(kept.ravel() != by_magnitude))
    assert len(view.sample) == 300 and set(view.sample.columns) >= {"abs_weight", "score", "kept", "magnitude_kept"}
    assert "diagonal" in inside.score_view(runs["sparsegpt"], 0, "mlp.up_proj").formula
    assert "RIA" in inside.score_view(runs["ria"], 0, "mlp.up_proj").formula


def test_the_mask_difference_equals_a_direct_computation_on_the_stored_masks(runs):
    a, b = runs["wiki"], runs["code"]
    block, module = inside.most_different_module(a, b)
    with np.load(a.record["masks"]) as ma, np.load(b.record["masks"]) as mb:
        shape = tuple(ma[f"{block}/{module}#shape"])
        ka = np.unpackbits(ma[f"{block}/{module}"], count=int(np.prod(shape))).astype(bool).reshape(shape)
        kb = np.unpackbits(mb[f"{block}/{module}"], count=int(np.prod(shape))).astype(bool).reshape(shape)
    found = inside.mask_difference(a, b, block, module, top_k=3, tiles=4)
    differ = ka != kb
    assert found.differ == differ.sum() > 0
    assert found.jaccard == pytest.approx((ka & kb).sum() / (ka | kb).sum())
    top = np.argsort(-np.maximum(a.channel(block, module), b.channel(block, module)))[:3]
    assert found.top_k_share == pytest.approx(differ[:, top].sum() / differ.sum())
    assert found.top_k_expected == pytest.approx(3 / shape[1])
    assert list(found.per_channel["differ"]) == list(differ.sum(axis=0))
    rows, cols = np.array_split(np.arange(shape[0]), 4), np.array_split(np.arange(shape[1]), 4)
    assert found.differ_tiles[1, 2] == pytest.approx(differ[np.ix_(rows[1], cols[2])].mean())


def test_across_the_model_per_block(runs):
    owl = inside.model_table(runs["owl"])
    blocks = runs["owl"].record["blocks"]
    assert list(owl["allocated_a"]) == [b["target_sparsity"] for b in blocks]
    assert owl["outlier_percent_a"].notna().all() and owl["allocated_a"].nunique() > 1  # OWL allocates per block
    both = inside.model_table(runs["wiki"], runs["code"])
    assert both["jaccard"].between(0, 1).all() and (both["norm_divergence"] > 0).all()
    a, b = runs["wiki"], runs["code"]
    from calib_core.experiments.inside_figures import model_view

    assert any("outlier ratio" in t.name for t in model_view(runs["owl"]).figure.data)
    expected = np.mean([np.abs(np.log2(a.channel(0, m) / b.channel(0, m))).mean() for bl, m in a.modules() if bl == 0])
    assert both.loc[both.block == 0, "norm_divergence"].item() == pytest.approx(expected)


def test_figures_for_one_run_and_for_two(runs, tmp_path):
    from calib_core.experiments.inside_figures import EXPLAIN, export_views, module_views

    views, notes = module_views(runs["wiki"], 1, "mlp.down_proj", runs["code"])
    assert [v.name for v in views] == ["channels", "scores", "mask", "model"] and not notes
    assert all(v.explain == EXPLAIN[v.name] and v.explain.count(". ") >= 1 for v in views)
    assert "Jaccard" in views[2].figure.layout.title.text and len(views[0].figure.data) == 5  # A, threshold, B, ratio, 1
    written, export_notes = export_views(views, tmp_path / "out", formats=("html", "csv"))
    assert sorted(p.name for p in written) == sorted(f"{v}.{s}" for v in ("channels", "scores", "mask", "model")
                                                     for s in ("html", "csv"))
    alone, notes = module_views(runs["magnitude"], 0, "self_attn.q_proj")
    assert [v.name for v in alone] == ["scores", "mask", "model"]  # magnitude: |W| is its score; no channels
    assert any("no per-channel statistics" in n for n in notes)


def test_the_inspect_command_writes_every_view(tmp_path, capsys):
    from calib_core.cli import main

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    ids = [run_prune(RunSpec(model=folder, calib=calib, nsamples=2, seqlen=16, config=PruneConfig(method="wanda"),
                             evaluation=EvalSpec(sources=["builtin:wiki"], windows=1)))["run_id"]
           for calib in ("builtin:wiki", "builtin:code")]
    out = tmp_path / "inspect"
    assert main(["inspect", str(ids[0]), str(ids[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    block, module = inside.most_different_module(*(inside.open_run(RunStore(), i) for i in ids))
    assert printed.startswith(f"block {block} {module}: channels:") and "Jaccard" in printed
    assert {p.name for p in out.iterdir()} >= {"channels.csv", "scores.html", "mask.csv", "model.html"}
    assert main(["inspect", str(ids[0]), "--block", "0", "--module", "nope", "--out", str(out)]) == 2
    assert "has no module nope in block 0" in capsys.readouterr().err


def test_dense_and_pruned_side_by_side_from_a_saved_folder_stored_masks_or_a_remake(tmp_path):
    from calib_core.models import load_model
    from calib_core.runs import continuations

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    store = RunStore(tmp_path / "runs.sqlite")
    made = {}
    for label, method, save in (("wanda saved", "wanda", True), ("wanda", "wanda", False),
                                ("sparsegpt saved", "sparsegpt", True), ("sparsegpt", "sparsegpt", False)):
        made[label] = run_prune(RunSpec(model=folder, calib="builtin:code", nsamples=2, seqlen=16,
                                        config=PruneConfig(method=method, sparsity=0.5),
                                        save=str(tmp_path / label.replace(" ", "-")) if save else None,
                                        evaluation=EvalSpec(sources=["builtin:wiki"], windows=1)), store=store)
    assert [continuations.how_made(made[k]) for k in made] == ["saved folder", "stored masks", "saved folder", "remade"]
    assert continuations.remake_seconds(made["sparsegpt"]) > 0
    prompt = "The history of the"
    found = continuations.side_by_side(list(made.values()), prompt, new_tokens=12)
    texts = {c.label: c.text for c in found}
    assert [c.source for c in found] == ["dense", "saved folder", "stored masks", "saved folder", "remade"]
    # the same run made two ways continues the same: masks on the dense model, and a remake from the record
    assert texts[f"run {made['wanda']['run_id']}"] == texts[f"run {made['wanda saved']['run_id']}"]
    assert texts[f"run {made['sparsegpt']['run_id']}"] == texts[f"run {made['sparsegpt saved']['run_id']}"]
    dense = continuations.continue_text(load_model(folder), prompt, new_tokens=12)
    assert texts["dense"] == dense and len(set(texts.values())) > 1  # pruning changed what the model writes
    remade, _ = continuations.pruned_model(made["sparsegpt"])
    saved = load_model(str(tmp_path / "sparsegpt-saved"))
    for (name, a), (_, b) in zip(remade.model.state_dict().items(), saved.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(NotEnoughDataError, match="Write a prompt"):
        continuations.side_by_side([made["wanda"]], "  ")
