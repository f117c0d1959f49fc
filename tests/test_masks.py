
import pytest
import torch

from calib_core.errors import ConfigError
from calib_core.prune.magnitude import magnitude_mask
from calib_core.prune.masks import UNSTRUCTURED, Pattern, lowest_per_row, parse_pattern
from calib_core.prune.stats import InputStats
from calib_core.prune.wanda import wanda_mask


def _stats(x: torch.Tensor, samples: int) -> InputStats:
    stats = InputStats(x.shape[-1], "cpu")
    for chunk in x.chunk(samples):
        stats.add(chunk, samples=1)
    return stats


def brute_force_wanda(W, X, sparsity):
    """Reference: score |W_ij| * ||X_j||_2 and drop the lowest floor(in*s) of every row by sorting."""
    norm = torch.sqrt((X.double() ** 2).sum(0))
    mask = torch.zeros_like(W, dtype=torch.bool)
    k = int(W.shape[1] * sparsity)
    for r in range(W.shape[0]):
        scores = [(abs(float(W[r, j])) * float(norm[j]), j) for j in range(W.shape[1])]
        for _, j in sorted(scores)[:k]:
            mask[r, j] = True
    return mask


def brute_force_magnitude(W, sparsity):
    k = int(W.numel() * sparsity)
    order = sorted(range(W.numel()), key=lambda i: abs(float(W.flatten()[i])))
    mask = torch.zeros(W.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view_as(W)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_wanda_matches_brute_force_and_prunes_exactly_per_row(sparsity):
    torch.manual_seed(1)
    W = torch.randn(12, 40)
    X = torch.randn(5 * 16, 40) * torch.rand(40) * 3  # features with different scales
    mask = wanda_mask(W, _stats(X, 5), sparsity, UNSTRUCTURED)
    assert torch.equal(mask, brute_force_wanda(W, X, sparsity))
    assert (mask.sum(1) == int(40 * sparsity)).all()


def test_wanda_differs_from_magnitude_when_activations_matter():
    torch.manual_seed(2)
    W = torch.randn(8, 32)
    X = torch.randn(64, 32) * torch.logspace(-2, 2, 32)
    assert not torch.equal(wanda_mask(W, _stats(X, 4), 0.5, UNSTRUCTURED), magnitude_mask(W, 0.5, UNSTRUCTURED))


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_magnitude_uses_one_threshold_per_matrix(sparsity):
    torch.manual_seed(3)
    W = torch.randn(10, 30) * torch.linspace(0.1, 3, 10)[:, None]  # rows of very different scale
    mask = magnitude_mask(W, sparsity, UNSTRUCTURED)
    assert torch.equal(mask, brute_force_magnitude(W, sparsity))
    assert int(mask.sum()) == int(W.numel() * sparsity)
    assert mask.sum(1).max() - mask.sum(1).min() > 0  # not per-row


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_nm_groups_have_exactly_n_zeros_and_drop_lowest(n, m):
    torch.manual_seed(4)
    W = torch.randn(6, 32)
    X = torch.randn(48, 32)
    stats = _stats(X, 3)
    for mask, scores in (
        (wanda_mask(W, stats, 0.0, Pattern(n, m)), W.abs() * stats.feature_norm()),
        (magnitude_mask(W, 0.0, Pattern(n, m)), W.abs()),
    ):
        groups = mask.view(6, 32 // m, m)
        assert (groups.sum(2) == n).all()
        group_scores = scores.view(6, 32 // m, m)
        pruned_max = torch.where(groups, group_scores, -torch.inf).amax(2)
        kept_min = torch.where(~groups, group_scores, torch.inf).amin(2)
        assert (pruned_max <= kept_min).all()


def test_ties_still_prune_exact_counts():
    scores = torch.zeros(4, 10)
    scores[:, 7:] = 1.0
    mask = lowest_per_row(scores, 0.5)
    assert (mask.sum(1) == 5).all()
    W = torch.zeros(4, 10)
    assert int(magnitude_mask(W, 0.3, UNSTRUCTURED).sum()) == 12


def authors_wanda_selection(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda's code: `torch.sort(W_metric, dim=-1, stable=True)` and the first int(in * s) indices of each row."""
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: (float(scores[r, j]), j))  # ties: lower index first
        mask[r, order[:k]] = True
    return mask


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_ties_within_a_row_are_broken_as_wandas_stable_sort(monkeypatch, sparsity):
    """Rows with many equal scores (a handful of values): the lower column is pruned first, on every
    row, chunked or not; topk (the earlier fallback) picks otherwise on many of them."""
    import calib_core.prune.masks as masks

    torch.manual_seed(1)
    scores = torch.randint(0, 4, (40, 96)).float()
    scores[::3] = torch.randn(14, 96)  # rows without ties take the kthvalue path
    expected = authors_wanda_selection(scores, sparsity)
    assert torch.equal(lowest_per_row(scores, sparsity), expected)
    monkeypatch.setattr(masks, "ROW_CHUNK_ELEMENTS", 7 * 96)
    assert torch.equal(lowest_per_row(scores, sparsity), expected)
    topk = torch.zeros_like(expected).scatter_(1, torch.topk(scores, int(96 * sparsity), dim=1, largest=False).indices,
                                               True)
    assert not torch.equal(topk, expected)  # the rows are built so that the rule matters


@pytest.mark.parametrize("text", ["4:2", "2:2", "0:4", "a:b", "2-4", "2:4:8"])
def test_bad_patterns_are_refused(text):
    with pytest.raises(ConfigError):
        parse_pattern(text)


def test_patterns_parse():
    assert parse_pattern("2:4") == Pattern(2, 4)
    assert parse_pattern("unstructured") == UNSTRUCTURED
    assert parse_pattern("16:32").sparsity == 0.5


def test_nm_needs_divisible_width():
    with pytest.raises(ConfigError, match="multiple of 8"):
        magnitude_mask(torch.randn(4, 12), 0.0, Pattern(4, 8))


@pytest.mark.parametrize("pattern", [UNSTRUCTURED, Pattern(2, 4)])
def test_selection_a_few_rows_at_a_time_equals_the_whole_matrix_at_once(monkeypatch, pattern):
    """Rows are independent: chunking (to keep temporaries small) must not change a single position."""
    import calib_core.prune.masks as masks

    torch.manual_seed(0)
    W = torch.randn(37, 64)
    W[3, :8] = 0.5  # ties at the threshold go through the stable sort's exact count
    X = torch.randn(128, 64)
    stats = _stats(X, 4)
    whole = wanda_mask(W, stats, 0.5, pattern)
    scores = W.abs() * stats.feature_norm()
    whole_scores = masks.mask_from_scores(scores, 0.5, pattern, per_row=True)
    monkeypatch.setattr(masks, "ROW_CHUNK_ELEMENTS", 5 * 64)  # 8 chunks, the last one short
    assert len(masks.row_chunks(37, 64)) == 8
    assert torch.equal(wanda_mask(W, stats, 0.5, pattern), whole)
    assert torch.equal(masks.mask_from_scores(scores, 0.5, pattern, per_row=True), whole_scores)
    assert torch.equal(whole, whole_scores)
    if not pattern.is_nm:
        assert (whole.sum(1) == 32).all()
