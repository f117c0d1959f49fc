"""Offline cloze accuracy: seeded items from held-out text, log-likelihoods equal a brute force."""

import pytest
import torch
import torch.nn.functional as F

from calib_core.data.documents import load_documents
from calib_core.errors import SourceError
from calib_core.metrics.cloze import cloze_accuracy, cloze_items
from tests.tiny import CharTokenizer, tiny_model

TOK = CharTokenizer()


def test_items_are_seeded_and_hold_the_true_continuation():
    items = cloze_items("builtin:wiki", TOK, items=12, context_tokens=20, continuation_tokens=8, seed=3)
    assert items == cloze_items("builtin:wiki", TOK, items=12, context_tokens=20, continuation_tokens=8, seed=3)
    assert items != cloze_items("builtin:wiki", TOK, items=12, context_tokens=20, continuation_tokens=8, seed=4)
    held_out = [TOK.decode(TOK(d)["input_ids"]) for d in load_documents("builtin:wiki", part="eval")]
    assert {q.answer for q in items} > {0}  # the answer's position varies
    for q in items:
        assert len(q.context) == 20 and all(len(c) == 8 for c in q.candidates) and len(q.candidates) == 4
        passage = TOK.decode(q.context + q.candidates[q.answer])
        assert any(passage in doc for doc in held_out)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "opt"])
@pytest.mark.parametrize("budget", [None, 1])  # 1: one item per batch
def test_loglik_equals_one_forward_per_candidate(family, budget, monkeypatch):
    from calib_core.metrics import cloze

    if budget:
        monkeypatch.setattr(cloze, "LOGITS_BUDGET", budget)
    model = tiny_model(family)  # gemma3_text: a context longer than its sliding window of 8
    contexts = [[5, 9, 3, 7, 2, 11, 12, 13, 14, 15, 16], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    candidates = [[[4, 4, 1], [8, 2, 6], [1, 1, 1], [3, 9, 5]], [[2, 2, 2], [7, 1, 3], [9, 9, 4], [6, 5, 4]]]
    batched = cloze.continuation_logliks(model, contexts, candidates)
    one = cloze.continuation_logliks(model, contexts[:1], candidates[:1])[0]  # alone, as in a batch
    assert batched[0] == pytest.approx(one, abs=1e-5)
    for context, item, values in zip(contexts, candidates, batched):
        for cand, value in zip(item, values):
            ids = torch.tensor([context + cand])
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            brute = sum(float(logp[len(context) + i - 1, tok]) for i, tok in enumerate(cand))
            assert value == pytest.approx(brute, abs=1e-4)


def test_too_short_source_is_refused():
    with pytest.raises(SourceError, match="held-out documents"):
        cloze_items("builtin:wiki", TOK, items=2, context_tokens=10**6)


@pytest.fixture
def bundled_for_cloze():
    from calib_core.models import load_model

    return load_model("smollm2-135m")


@pytest.mark.bundled
def test_bundled_model_beats_chance_and_pruning_hurts(bundled_for_cloze):
    from calib_core.prune import PruneConfig, prune_model

    lm = bundled_for_cloze
    dense = cloze_accuracy(lm.model, lm.tokenizer, "builtin:wiki", items=40, context_tokens=48,
                           continuation_tokens=12)
    assert dense.acc > 0.6 and dense.items == 40  # chance is 0.25
    prune_model(lm.model, None, PruneConfig(device="cpu", method="magnitude", sparsity=0.8))
    pruned = cloze_accuracy(lm.model, lm.tokenizer, "builtin:wiki", items=40, context_tokens=48,
                            continuation_tokens=12)
    assert pruned.acc < dense.acc


def test_pipeline_records_cloze_accuracy(tmp_path):
    from calib_core.prune import PruneConfig
    from calib_core.runs import RunStore
    from calib_core.runs.pipeline import run_prune
    from calib_core.runs.spec import EvalSpec, RunSpec
    from tests.tiny import save_tiny_folder

    folder = save_tiny_folder(tmp_path / "tiny")
    record = run_prune(RunSpec(model=str(folder), nsamples=2, seqlen=16, config=PruneConfig(device="cpu",
                       method="wanda"), keep_masks=False, evaluation=EvalSpec(sources=["builtin:wiki"], windows=2,
                       cloze_items=5)),
                           store=RunStore(tmp_path / "runs.sqlite"))
    (cloze,) = record["cloze"]
    assert cloze["items"] == 5 and 0 <= cloze["acc"] <= 1 and cloze["source"] == "builtin:wiki"
