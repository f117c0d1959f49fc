"""RIA against plain loops written from the authors' released code (score, unstructured threshold with
ties, per-row option, N:M, heuristic channel reallocation), end to end on a tiny model, and from the CLI."""

import json

import pytest
import torch

from calib_core.cli import main as cli_main
from calib_core.models import weight_matrix
from calib_core.prune import PruneConfig, prune_model
from calib_core.prune.masks import UNSTRUCTURED, Pattern
from calib_core.prune.ria import ria_mask
from calib_core.prune.stats import InputStats
from tests.tiny import naive_block_by_block, random_ids, save_tiny_folder, tiny_model


def _stats(X: torch.Tensor, samples: int = 4) -> InputStats:
    stats = InputStats(X.shape[1], "cpu")
    for chunk in X.chunk(samples):
        stats.add(chunk, samples=1)
    return stats


def loop_scores(W, X, samples=4, a=0.5):
    """score_ij = (|W_ij| / sum_i' |W_i'j| + |W_ij| / sum_j' |W_ij'|) * sqrt(scaler_row_j) ** a, with
    scaler_row the mean over samples of each sample's sum over tokens of x_j^2 (lib/layerwrapper.py)."""
    out, inp = W.shape
    scaler = [sum(float(x) ** 2 for x in X[:, j]) / samples for j in range(inp)]
    col = [sum(abs(float(W[i, j])) for i in range(out)) for j in range(inp)]
    row = [sum(abs(float(W[i, j])) for j in range(inp)) for i in range(out)]
    return [[(abs(float(W[i, j])) / col[j] + abs(float(W[i, j])) / row[i]) * (scaler[j] ** 0.5) ** a
             for j in range(inp)] for i in range(out)]


def loop_threshold(scores, sparsity):
    """prune.py: thresh = sort(score.flatten())[int(out*in*s)]; pruned = score <= thresh."""
    flat = sorted(s for r in scores for s in r)
    thresh = flat[int(len(flat) * sparsity)]
    return torch.tensor([[s <= thresh for s in r] for r in scores])


def loop_nm(scores, n, m):
    """prune.py: in every group of m consecutive inputs of each row, the n lowest are pruned."""
    mask = [[False] * len(r) for r in scores]
    for i, r in enumerate(scores):
        for start in range(0, len(r), m):
            for j in sorted(range(start, start + m), key=lambda j: r[j])[:n]:
                mask[i][j] = True
    return torch.tensor(mask)


def loop_reallocation(scores, n, m):
    """prune.py's heuristic channel reallocation (importance "sum"): sort the columns by summed score,
    deal them into m interleaved slots (even slots of their 1-based count reversed), N:M on the
    permuted columns, mask mapped back."""
    columns = len(scores[0])
    sums = [sum(r[j] for r in scores) for j in range(columns)]
    ranked = sorted(range(columns), key=lambda j: sums[j])
    index = [0] * columns
    for ii in range(1, m + 1):
        part = ranked[columns * (ii - 1) // m: columns * ii // m]
        if ii % 2 == 0:
            part = part[::-1]
        for position, channel in zip(range(ii - 1, columns, m), part):
            index[position] = channel
    permuted = [[r[index[p]] for p in range(columns)] for r in scores]
    mask_permuted = loop_nm(permuted, n, m)
    mask = torch.zeros(len(scores), columns, dtype=torch.bool)
    mask[:, torch.tensor(index)] = mask_permuted
    return mask


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("a", [0.5, 1.0])
def test_unstructured_ria_is_the_authors_matrix_threshold_ties_included(sparsity, a):
    torch.manual_seed(0)
    W = torch.randn(12, 16)
    W[2, :6] = 0.25  # equal weights in one row and across columns: tied scores
    W[:, 5] = W[0, 5]
    X = torch.randn(40, 16)
    X[:, 7] = X[:, 3]  # two inputs with equal norms
    expected = loop_threshold(loop_scores(W, X, a=a), sparsity)
    mask = ria_mask(W, _stats(X), sparsity, UNSTRUCTURED, a)
    assert torch.equal(mask, expected)
    assert int(mask.sum()) >= int(W.numel() * sparsity) + 1  # k + 1 and the ties, as their `<=` does


def test_ria_scores_made_a_few_rows_at_a_time_equal_the_whole_matrix(monkeypatch):
    import calib_core.prune.masks as masks

    torch.manual_seed(3)
    W, X = torch.randn(37, 24), torch.randn(30, 24)
    whole = ria_mask(W, _stats(X), 0.5, UNSTRUCTURED)
    monkeypatch.setattr(masks, "ROW_CHUNK_ELEMENTS", 5 * 24)  # 8 chunks, the last one short
    assert len(masks.row_chunks(37, 24)) == 8
    assert torch.equal(ria_mask(W, _stats(X), 0.5, UNSTRUCTURED), whole)
    assert torch.equal(whole, loop_threshold(loop_scores(W, X), 0.5))


def test_ria_prunes_every_score_tied_at_the_threshold():
    W = torch.ones(4, 8)  # every score equal: `<=` prunes everything
    mask = ria_mask(W, _stats(torch.ones(8, 8)), 0.5, UNSTRUCTURED)
    assert bool(mask.all())


def test_ria_per_row_option_takes_the_lowest_of_each_row():
    torch.manual_seed(1)
    W, X = torch.randn(10, 20), torch.randn(30, 20)
    scores = loop_scores(W, X)
    mask = ria_mask(W, _stats(X), 0.4, UNSTRUCTURED, selection="row")
    for i, row in enumerate(scores):
        expected = sorted(range(20), key=lambda j: (row[j], j))[:8]
        assert sorted(torch.nonzero(mask[i]).flatten().tolist()) == sorted(expected)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_ria_nm_with_and_without_channel_reallocation(n, m):
    torch.manual_seed(2)
    W, X = torch.randn(16, 32), torch.randn(48, 32)
    scores = loop_scores(W, X)
    plain = ria_mask(W, _stats(X), 0.0, Pattern(n, m))
    assert torch.equal(plain, loop_nm(scores, n, m))
    reallocated = ria_mask(W, _stats(X), 0.0, Pattern(n, m), reallocation="heuristic")
    assert torch.equal(reallocated, loop_reallocation(scores, n, m))
    assert not torch.equal(reallocated, plain)  # the permutation moves the groups
    assert (reallocated.sum(1) == 32 * n // m).all()  # N of every M after the permutation, so n/m per row


def naive_ria(model, ids, sparsity):
    """The authors' score and matrix threshold in float64, block by block (tests/tiny.naive_block_by_block)."""
    def prune_block(modules, scaler):
        for name, module in modules.items():
            W = weight_matrix(module)
            magnitude = W.abs().double()
            scores = (magnitude / magnitude.sum(0) + magnitude / magnitude.sum(1, keepdim=True)) \
                * torch.sqrt(scaler[name]) ** 0.5
            W[scores <= torch.sort(scores.flatten())[0][int(W.numel() * sparsity)]] = 0.0

    naive_block_by_block(model, ids, prune_block)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_engine_ria_equals_a_naive_reimplementation(family):
    ids = random_ids(5, 20, seed=7)
    engine, naive = tiny_model(family, seed=3), tiny_model(family, seed=3)
    result = prune_model(engine, ids, PruneConfig(device="cpu", method="ria", sparsity=0.6, batch_size=2))
    naive_ria(naive, ids, 0.6)
    for (name, e), (_, n) in zip(engine.named_parameters(), naive.named_parameters()):
        assert torch.equal(e == 0, n == 0), name
    assert result.method_details["ria"]["selection"] == "matrix"


def test_ria_from_the_cli_on_a_tiny_model(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    report = tmp_path / "ria.json"
    code = cli_main(["prune", "--model", str(folder), "--method", "ria", "--ria-a", "1", "--pattern", "2:4",
                     "--ria-reallocation", "heuristic", "--nsamples", "2", "--seqlen", "16", "--eval-windows", "1",
                     "--device", "cpu", "--report", str(report)])
    assert code == 0
    record = json.loads(report.read_text())
    assert record["config"]["method"] == "ria" and record["config"]["ria_a"] == 1.0
    assert record["method_details"]["ria"]["reallocation"] == "heuristic"
    assert record["overall_sparsity"] == pytest.approx(0.5)
    assert cli_main(["prune", "--model", str(folder), "--method", "ria", "--ria-a", "-1"]) == 2
    assert "ria_a must be at least 0" in capsys.readouterr().err
