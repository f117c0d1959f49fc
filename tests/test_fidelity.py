"""Our DSnoT and OWL defaults against independent, plain-loop references written from the authors'
algorithms (DSnoT: zyxxmu/DSnoT `lib/prune.py`; OWL mixed N:M: luuyin/OWL `lib/prune_all.py`)."""

import json
import math

import numpy as np
import pytest
import torch

from calib_core.cli import main as cli_main
from calib_core.errors import ConfigError
from calib_core.models import decoder_blocks, load_model, prunable_modules, weight_matrix
from calib_core.prune import PruneConfig, prune_model
from calib_core.prune.dsnot import dsnot_refine
from calib_core.prune.masks import UNSTRUCTURED, Pattern, mask_from_scores
from calib_core.prune.owl import owl_nm_allocation
from calib_core.prune.sparsegpt import sparsegpt_static_scores
from calib_core.prune.stats import InputStats
from calib_core.prune.wanda import wanda_mask, wanda_scores
from tests.tiny import random_ids, save_tiny_folder, tiny_model


def heavy_tailed_stats(features=256, sequences=8, tokens=64, seed=0):
    """Inputs whose feature means differ in size and sign (as in LLM activations)."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randn(features, generator=g) * torch.rand(features, generator=g).pow(4) * 3
    stats = InputStats(features, "cpu", with_mean=True)
    for _ in range(sequences):
        stats.add(torch.randn(1, tokens, features, generator=g) + offsets, samples=1)
    return stats


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


# ---------------------------------------------------------------- DSnoT references (one row at a time)


def reference_regrow_walk(pruned, regrow_key):
    """The regrow candidates of one row: pruned weights sorted by key, taken from the top while err > 0
    and from the bottom otherwise; None once the needed sign runs out."""
    order = sorted(pruned, key=lambda j: (regrow_key[j], j))  # ascending, stable
    low, high = 0, len(order) - 1

    def next_candidate(err):
        nonlocal low, high
        if err > 0:
            grow = order[high] if high >= 0 and regrow_key[order[high]] > 0 else None
            high -= 1
        else:
            grow = order[low] if low < len(order) and regrow_key[order[low]] < 0 else None
            low += 1
        return grow

    return next_candidate


def reference_dsnot_row(contrib, regrow_key, cut_rank, pruned, threshold, cycles, same_sign):
    """The authors' unstructured loop for one row, written as plain Python lists."""
    pruned = set(pruned)
    cols = len(contrib)
    err = sum(contrib[j] for j in pruned)
    initial_sign = _sign(err)
    regrow = reference_regrow_walk(pruned, regrow_key)
    kept = sorted((j for j in range(cols) if j not in pruned), key=lambda j: (cut_rank[j], j))
    cut_list = ([j for j in kept if contrib[j] < 0] + [j for j in kept if contrib[j] == 0]
                + [j for j in kept if contrib[j] > 0][::-1])
    front, back = 0, len(cut_list) - 1
    swaps = 0
    for _ in range(cycles):
        grow = regrow(err)
        crossed = front > back
        if err < 0:
            cut = cut_list[back] if back >= 0 else None
            back -= 1
        else:
            cut = cut_list[front] if front < len(cut_list) else None
            front += 1
        if abs(err) <= threshold or grow is None or cut is None or crossed:
            break
        new_err = err + contrib[cut] - contrib[grow]
        if same_sign and _sign(new_err) != initial_sign:
            break
        pruned.discard(grow)
        pruned.add(cut)
        err = new_err
        swaps += 1
    return pruned, swaps


def reference_dsnot_nm_row(contrib, regrow_key, metric, pruned, m, threshold, cycles):
    """The authors' N:M loop for one row: the cut is the lowest-metric kept weight in the regrown
    weight's group of m (any sign); a swap needs err to keep its initial sign."""
    pruned = set(pruned)
    used = set(pruned)
    err = sum(contrib[j] for j in pruned)
    initial_sign = _sign(err)
    regrow = reference_regrow_walk(pruned, regrow_key)
    for _ in range(cycles):
        grow = regrow(err)
        if abs(err) <= threshold or grow is None:
            break
        start = grow - grow % m
        candidates = [j for j in range(start, start + m) if j not in used]
        if not candidates:
            break
        cut = min(candidates, key=lambda j: (metric[j], j))
        new_err = err + contrib[cut] - contrib[grow]
        if _sign(new_err) != initial_sign:
            break
        pruned.discard(grow)
        pruned.add(cut)
        used.add(cut)
        err = new_err
    return pruned


def _row_inputs(W, stats):
    contrib = W * stats.token_sum_mean()
    regrow_key = contrib / stats.variance()
    return contrib, regrow_key, wanda_scores(W, stats)


@pytest.mark.parametrize("rule", ["original", "same-sign"])
def test_dsnot_unstructured_matches_the_authors_loop(rule):
    torch.manual_seed(0)
    W = torch.randn(48, 256)
    stats = heavy_tailed_stats()
    initial = wanda_mask(W, stats, 0.6, UNSTRUCTURED)
    refined = dsnot_refine(W, initial, stats, UNSTRUCTURED, threshold=0.1, max_cycles=50, rule=rule)
    contrib, key, wanda = _row_inputs(W, stats)
    total_swaps = 0
    for r in range(W.shape[0]):
        expected, swaps = reference_dsnot_row(
            contrib[r].tolist(), key[r].tolist(), wanda[r].tolist(), initial[r].nonzero().flatten().tolist(),
            0.1, 50, same_sign=rule == "same-sign")
        assert set(refined[r].nonzero().flatten().tolist()) == expected, r
        total_swaps += swaps
    assert torch.equal(refined.sum(1), initial.sum(1))
    assert total_swaps > W.shape[0]  # the loop really runs


def test_dsnot_original_rule_swaps_past_a_non_improving_swap():
    """Our former rule stops a row at its first swap that does not shrink |err|; the authors' keeps
    going while |err| > threshold, so it swaps more and brings more rows under the threshold."""
    torch.manual_seed(1)
    W = torch.randn(64, 256)
    stats = heavy_tailed_stats(seed=1)
    initial = wanda_mask(W, stats, 0.6, UNSTRUCTURED)
    original = dsnot_refine(W, initial, stats, UNSTRUCTURED, 0.1, 50, rule="original")
    improving = dsnot_refine(W, initial, stats, UNSTRUCTURED, 0.1, 50, rule="improve")
    swaps = lambda refined: int((refined & ~initial).sum())  # noqa: E731
    assert swaps(original) > 2 * swaps(improving)
    contrib = W * stats.token_sum_mean()
    settled = lambda refined: float(((contrib * refined).sum(1).abs() <= 0.1).float().mean())  # noqa: E731
    assert settled(original) > settled(improving)


def test_dsnot_nm_matches_the_authors_loop():
    torch.manual_seed(2)
    W = torch.randn(40, 256)
    stats = heavy_tailed_stats(seed=2)
    pattern = Pattern(2, 4)
    initial = wanda_mask(W, stats, 0.5, pattern)
    refined = dsnot_refine(W, initial, stats, pattern, threshold=0.1, max_cycles=50)
    contrib, key, wanda = _row_inputs(W, stats)
    changed = 0
    for r in range(W.shape[0]):
        expected = reference_dsnot_nm_row(contrib[r].tolist(), key[r].tolist(), wanda[r].tolist(),
                                          initial[r].nonzero().flatten().tolist(), 4, 0.1, 50)
        assert set(refined[r].nonzero().flatten().tolist()) == expected, r
        changed += expected != set(initial[r].nonzero().flatten().tolist())
    assert (refined.view(40, 64, 4).sum(2) == 2).all()
    assert changed > 10


def test_dsnot_nm_cut_ignores_sign_and_uses_the_initial_metric():
    """One row, hand-made: the group's lowest-metric kept weight has a contribution of the 'wrong'
    sign, which our former rule refused to cut; the authors' loop cuts it."""
    contrib = torch.tensor([[3.0, 0.5, 1.0, 0.2]])
    stats = InputStats(4, "cpu", with_mean=True)
    stats.sum[:] = 1.0
    stats.within_var_sum[:] = 1.0
    stats.samples, stats.tokens = 1, 1
    W = contrib.clone()  # mean = 1, var = 1: W is the contribution and the regrow key
    mask = torch.tensor([[True, True, False, False]])  # err = 3.5
    metric = torch.tensor([[0.0, 0.0, 5.0, 1.0]])  # column 3 has the lowest metric among kept ones
    refined = dsnot_refine(W, mask, stats, Pattern(2, 4), threshold=0.1, max_cycles=1, initial_metric=metric)
    # regrow column 0 (largest positive key), cut column 3: err 3.5 - 3 + 0.2 = 0.7 keeps its sign
    assert refined.tolist() == [[False, True, False, True]]
    former = dsnot_refine(W, mask, stats, Pattern(2, 4), threshold=0.1, max_cycles=1, rule="improve")
    assert former.tolist() == [[True, True, False, False]]  # no opposite-sign weight in the group


def test_dsnot_variance_is_pooled_within_sequences():
    g = torch.Generator().manual_seed(3)
    sequences = [torch.randn(1, 20, 5, generator=g) + 4 * i for i in range(3)]  # very different means
    stats = InputStats(5, "cpu", with_mean=True)
    stats.add(torch.cat(sequences[:2]), samples=2)  # a batch of two sequences
    stats.add(sequences[2][0], samples=1)  # a [tokens, in] input
    per_sequence = [np.var(s[0].numpy(), axis=0) for s in sequences]
    expected = np.mean(per_sequence, axis=0)  # equal lengths: the plain mean of per-sequence variances
    assert np.allclose(stats.variance().numpy(), expected, rtol=1e-5)
    total = np.var(torch.cat([s[0] for s in sequences]).numpy(), axis=0)
    assert (total > 2 * expected).all()  # the former total variance would be far larger here


def test_dsnot_threshold_scale_is_applied_and_recorded():
    model = tiny_model()
    result = prune_model(model, random_ids(2, 32), PruneConfig(device="cpu", method="dsnot", dsnot_threshold_scale="seqlen"))
    details = result.method_details["dsnot"]
    assert details["effective_threshold"] == pytest.approx(0.1 * 32 / 2048)
    assert details["seqlen"] == 32 and details["rule"] == "original"


def test_sparsegpt_static_scores_match_the_formula():
    torch.manual_seed(4)
    W = torch.randn(6, 8)
    X = torch.randn(64, 8)
    X[:, 2] = 0  # a dead input
    H = 2 / 4 * X.t() @ X
    scores = sparsegpt_static_scores(W, H, damp=0.01)
    Hd = H.double().clone()
    Hd[2, 2] = 1.0
    Hd += 0.01 * torch.diag(Hd).mean() * torch.eye(8, dtype=torch.float64)
    upper = torch.linalg.cholesky(torch.linalg.inv(Hd)).t()
    Wd = W.double().clone()
    Wd[:, 2] = 0
    expected = Wd.square() / torch.diag(upper).square()
    assert torch.allclose(scores.double(), expected, rtol=1e-4, atol=1e-8)


def test_dsnot_on_sparsegpt_starts_from_the_static_metric_without_weight_updates():
    dense = tiny_model()
    model = tiny_model()
    ids = random_ids(4, 16)
    result = prune_model(model, ids, PruneConfig(device="cpu", method="dsnot", base="sparsegpt", sparsity=0.5))
    assert result.method_details["dsnot"]["sparsegpt_init"] == "static"
    for block, dense_block in zip(decoder_blocks(model), decoder_blocks(dense)):
        for name, module in prunable_modules(block).items():
            W, W0 = weight_matrix(module), weight_matrix(prunable_modules(dense_block)[name])
            kept = W != 0
            assert torch.equal(W[kept], W0[kept]), name  # a full SparseGPT pass would change them
            assert (kept.sum(1) == W.shape[1] // 2).all()  # per row, as the authors' static mask
    variant = tiny_model()
    prune_model(variant, ids, PruneConfig(device="cpu", method="dsnot", base="sparsegpt", sparsity=0.5, dsnot_sparsegpt_init="full"))
    mlp = prunable_modules(decoder_blocks(variant)[0])["mlp.down_proj"]
    mlp0 = prunable_modules(decoder_blocks(dense)[0])["mlp.down_proj"]
    kept = weight_matrix(mlp) != 0
    assert not torch.equal(weight_matrix(mlp)[kept], weight_matrix(mlp0)[kept])


def test_dsnot_sparsegpt_static_mask_is_lowest_static_score_per_row():
    """With nothing refined the static base is exactly the per-row lowest static scores."""
    torch.manual_seed(5)
    W = torch.randn(8, 32)
    stats = InputStats(32, "cpu", with_mean=True, with_hessian=True)
    stats.add(torch.randn(1, 64, 32), samples=1)
    scores = sparsegpt_static_scores(W, stats.hessian())
    mask = mask_from_scores(scores, 0.5, UNSTRUCTURED, per_row=True)
    refined = dsnot_refine(W, mask, stats, UNSTRUCTURED, threshold=1e9, initial_metric=scores)
    assert torch.equal(refined, mask)


# ---------------------------------------------------------------- DSnoT sublayers, through the CLI


def test_cli_dsnot_default_leaves_mlp_with_the_plain_wanda_mask(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_LAB_DATA", str(tmp_path / "data"))
    folder = save_tiny_folder(tmp_path / "tiny")
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"word{i} and some text" for i in range(400)))
    # Dense propagation: every block sees the same inputs in both runs, so every block's Wanda
    # statistics (and the plain Wanda mask) are the same; with pruned propagation only block 0's are.
    common = ["prune", "--model", str(folder), "--calib", f"file:{text}", "--nsamples", "4", "--seqlen", "32",
              "--sparsity", "0.6", "--no-eval", "--propagate", "dense"]
    masks = {}
    for method in ("wanda", "dsnot"):
        out = tmp_path / method
        assert cli_main(common + ["--method", method, "--save", str(out), "--report", str(tmp_path / f"{method}.json")]) == 0
        model = load_model(str(out)).model
        masks[method] = {f"{i}.{n}": weight_matrix(m) == 0 for i, b in enumerate(decoder_blocks(model))
                         for n, m in prunable_modules(b).items()}
    mlp = [k for k in masks["wanda"] if ".mlp." in k]
    attention = [k for k in masks["wanda"] if ".self_attn." in k]
    assert mlp and attention
    for key in mlp:
        assert torch.equal(masks["dsnot"][key], masks["wanda"][key]), key
    assert any(not torch.equal(masks["dsnot"][k], masks["wanda"][k]) for k in attention)
    details = json.loads((tmp_path / "dsnot.json").read_text())["method_details"]["dsnot"]
    assert details["sublayers"] == "skip-mlp"
    assert set(details["initial_mask_only"]) == {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert "self_attn.q_proj" in details["refined_modules"]


# ---------------------------------------------------------------- OWL mixed N:M


def reference_owl_nm(ratios, n, lam):
    """The authors' allocation: width lambda (no factor 2), N_l = N - np.round(r_l - mean r)."""
    d = np.array(ratios, dtype=float)
    r = (d - d.min()) * (1 / (d.max() - d.min()) * lam)
    return [int(x) for x in n - np.round(r - np.mean(r))]


@pytest.mark.parametrize("ratios", [
    [1.0] * 26 + [9.0, 8.5, 8.0, 7.0],  # a few outlier-rich layers
    list(np.linspace(0.5, 6.0, 30)),  # an even spread
    [1.0] * 29 + [12.0],  # one hot layer
    [2.0, 2.0, 2.1, 2.25, 2.75, 3.0, 4.5, 2.5],  # r - mean lands on halves: round half to even
])
def test_owl_mixed_nm_matches_the_authors_allocation(ratios):
    patterns = owl_nm_allocation(ratios, Pattern(2, 4), lam=2.0)
    assert [p.n for p in patterns] == reference_owl_nm(ratios, 2, 2.0)
    assert all(p.m == 4 for p in patterns)


def test_owl_mixed_nm_does_not_rebalance_the_mean():
    ratios = [1.0] * 26 + [9.0, 8.5, 8.0, 7.0]
    ns = [p.n for p in owl_nm_allocation(ratios, Pattern(2, 4), lam=2.0)]
    assert 3 not in ns  # the former rule added 3:4 layers to keep the mean N at 2
    assert sum(ns) / len(ns) < 2
    balanced = [p.n for p in owl_nm_allocation(ratios, Pattern(2, 4), lam=2.0, rule="balanced")]
    assert sum(balanced) == 2 * len(balanced)


def test_owl_mixed_nm_refuses_n_outside_range():
    with pytest.raises(ConfigError, match="outside"):
        owl_nm_allocation([0.0, 0.0, 0.0, 10.0], Pattern(2, 4), lam=6.0)


def test_owl_mixed_nm_records_planned_and_achieved_sparsity():
    model = tiny_model(num_hidden_layers=3)
    result = prune_model(model, random_ids(4, 16), PruneConfig(device="cpu", method="owl", pattern="2:4", owl_m=3))
    details = result.method_details["owl"]
    assert details["nm_rule"] == "original" and "extension" not in details
    ns = [int(p.split(":")[0]) for p in result.allocation.patterns]
    assert details["planned_sparsity"] == pytest.approx(sum(ns) / (4 * len(ns)))
    assert details["achieved_sparsity"] == pytest.approx(result.overall_sparsity)
    assert math.isclose(result.overall_sparsity, details["planned_sparsity"], abs_tol=1e-3)
    extension = prune_model(tiny_model(num_hidden_layers=3), random_ids(4, 16),
                            PruneConfig(device="cpu", method="owl", base="magnitude", pattern="2:4", owl_m=3))
    assert "extension" in extension.method_details["owl"]
