"""Self-generation, similarity scores and quantized loading on tiny models."""

import math
import threading
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from calib_core.data import sets
from calib_core.data.selfgen import GenerationConfig, filter_by_perplexity, generate_set, save_generated
from calib_core.data.sources import build_calibration
from calib_core.data.tokens import special_affixes
from calib_core.errors import ConfigError, SourceError
from calib_core.metrics.similarity import (
    Reference,
    js_divergence,
    min_k,
    ngram_overlap,
    ngrams,
    sample_for_scoring,
    sample_texts,
    score_token_ids,
    similarity_table,
    words,
)
from calib_core.models import load_model
from calib_core.prune import PruneConfig, prune_model
from tests.tiny import CharTokenizer, char_tokenizer, random_ids, save_tiny_folder, tiny_model

TOK = CharTokenizer()


def brute_force_scores(model, ids, k):
    """Min-K%++ and Min-K% from the full log-softmax of one unpadded forward, in float64."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    logp_all = F.log_softmax(logits, dim=-1)
    p = logp_all.exp()
    mu = (p * logp_all).sum(-1)
    sigma = torch.sqrt((p * logp_all**2).sum(-1) - mu**2)
    target = logp_all[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    z = (target - mu) / sigma
    count = int(math.floor(k * (len(ids) - 1)))
    return float(torch.sort(z)[0][:count].mean()), float(torch.sort(target)[0][:count].mean())


def test_min_k_scores_match_brute_force_and_ignore_batching():
    model = tiny_model("llama")
    texts = [random_ids(1, n, seed=n)[0].tolist() for n in (9, 30, 17, 30)]
    alone = [score_token_ids(model, [t], window=64)[0] for t in texts]
    together = score_token_ids(model, texts, window=64, batch_size=3)
    for ids, a, b in zip(texts, alone, together):
        expected_pp, expected_k = brute_force_scores(model, ids, 0.5)
        assert min_k(a.z, 0.5) == pytest.approx(expected_pp, abs=1e-4)
        assert min_k(a.logp, 0.5) == pytest.approx(expected_k, abs=1e-4)
        # Same text, different batch and padding: equal up to float32 matmul rounding. z divides
        # by sigma, which is tiny (~0.1) for this near-uniform random model, hence its looser bound.
        assert torch.allclose(a.logp, b.logp, atol=1e-5) and torch.allclose(a.embedding, b.embedding, atol=1e-5)
        assert torch.allclose(a.z, b.z, atol=1e-3)


def test_long_texts_are_scored_in_windows():
    model = tiny_model("llama")
    ids = random_ids(1, 50)[0].tolist()
    scores = score_token_ids(model, [ids], window=20)[0]
    assert scores.logp.numel() == 19 + 19 + 9  # three windows, each predicting len - 1 tokens


@pytest.mark.parametrize("drop", [0.2, 0.5, 0.0])
def test_filter_keeps_exactly_texts_below_percentile(drop):
    ppls = [12.0, 3.0, 50.0, 7.5, 9.1, 30.0, 4.4, 18.0, 22.0, 5.0]
    kept, threshold = filter_by_perplexity(ppls, drop)
    if drop == 0:
        assert all(kept) and threshold is None
        return
    ordered = sorted(ppls)
    assert kept == [p < threshold for p in ppls]
    assert sum(kept) == round(len(ppls) * (1 - drop))
    assert max(p for p, k in zip(ppls, kept) if k) < min(p for p, k in zip(ppls, kept) if not k)
    assert ordered[sum(kept) - 1] < threshold <= ordered[sum(kept)]


def _gen(model, seed, cancel=None, events=None):
    config = GenerationConfig(source="builtin:wiki", texts=6, prefix_tokens=2, max_new_tokens=12, batch_size=4, seed=seed)
    return generate_set(model, TOK, config, on_event=(events.append if events is not None else None), cancel=cancel,
                        model_name="tiny")


def test_generation_is_seeded_and_filtered():
    model = tiny_model("llama")
    events = []
    first, again, other = _gen(model, 0, events=events), _gen(model, 0), _gen(model, 1)
    assert [r["text"] for r in first.records] == [r["text"] for r in again.records]
    assert [r["text"] for r in first.records] != [r["text"] for r in other.records]
    assert len(first.records) == 6 and sum(r["kept"] for r in first.records) == 4
    # with 6 texts the 80th percentile is exactly the 5th smallest ppl; "ppl < threshold" keeps 4
    assert all(r["tokens"] > 2 for r in first.records)
    ends = [e for e in events if e.batch_tokens is None]  # batch ends (a slow machine adds mid-batch events)
    assert [e.texts_done for e in ends] == [4, 6]
    # the running ppl distribution grows batch by batch and ends as the records' ppls
    assert len(ends[0].ppls) == 4 and ends[-1].ppls == [r["ppl"] for r in first.records]
    assert first.metadata["filter_threshold"] is not None
    kept_lengths = [r["tokens"] for r in first.records if r["kept"]]
    assert first.metadata["kept_texts_longer_than"]["128"] == sum(n > 128 for n in kept_lengths) == 0
    assert set(first.metadata["kept_texts_longer_than"]) == {"128", "256", "512", "1024", "2048"}
    save_generated("tiny-gen", first)
    assert sets.set_texts("tiny-gen") == first.kept_texts


def test_generation_cancel_keeps_what_was_generated():
    model = tiny_model("llama")
    cancel = threading.Event()
    events = []

    def on_event(event):
        events.append(event)
        if event.batch_tokens is None:  # the first batch ended
            cancel.set()

    config = GenerationConfig(source="builtin:wiki", texts=6, prefix_tokens=2, max_new_tokens=12, batch_size=4)
    result = generate_set(model, TOK, config, on_event=on_event, cancel=cancel)
    assert result.cancelled and len(result.records) == 4


def test_generation_stops_within_a_token_of_a_cancel_and_reports_progress_mid_batch(monkeypatch):
    """A cancel stops `generate` at the next token, not at the end of the batch (a 2048-token batch
    takes minutes on a CPU); and a batch in progress reports its new tokens."""
    from calib_core.data import selfgen

    model = tiny_model("llama")
    cancel = threading.Event()
    cancel.set()
    config = GenerationConfig(source="builtin:wiki", texts=6, prefix_tokens=2, max_new_tokens=200, batch_size=4)
    result = generate_set(model, TOK, config, cancel=cancel)
    assert result.cancelled and len(result.records) == 4
    assert max(r["tokens"] for r in result.records) <= 3  # prefix (2) + the one token generated before the check

    monkeypatch.setattr(selfgen._BatchWatch, "__init__", _every_step(selfgen._BatchWatch.__init__))
    events = []
    generate_set(model, TOK, GenerationConfig(source="builtin:wiki", texts=2, prefix_tokens=2, max_new_tokens=6,
                                              batch_size=2, repetition_penalty=1.0), on_event=events.append)
    during = [e.batch_tokens for e in events if e.batch_tokens is not None]
    assert during and during == sorted(during) and max(during) <= 6 and events[-1].batch_tokens is None


def _every_step(init):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.every = 0.0
    return patched


def test_generation_config_is_validated():
    with pytest.raises(ConfigError):
        GenerationConfig(drop_fraction=1.0).validate()
    with pytest.raises(ConfigError):
        GenerationConfig(temperature=0).validate()


def test_ngram_overlap_and_js_on_hand_made_texts():
    text = "the cat sat on the mat while the dog slept"
    same = Reference("hand", 3, set(ngrams(words(text), 3)), Counter(words(text)))
    other = "quantum chromodynamics binds quarks strongly inside hadrons"
    disjoint = Reference("hand", 3, set(ngrams(words(other), 3)), Counter(words(other)))
    assert ngram_overlap(text, same) == 1.0 and ngram_overlap(text, disjoint) == 0.0
    assert js_divergence(Counter(words(text)), same.unigrams) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(Counter(words(text)), disjoint.unigrams) == pytest.approx(math.log(2))
    half = Counter({"a": 1, "b": 1})
    assert 0 < js_divergence(half, Counter({"a": 1})) < math.log(2)


def test_similarity_table_and_embedding_cosine():
    model = tiny_model("llama")
    texts = {"alpha": ["the quick brown fox jumps " * 3, "over the lazy dog " * 4],
             "beta": ["lorem ipsum dolor sit amet " * 3]}
    reference = Reference("self", 2, set(), Counter(words(texts["alpha"][0])))
    scored = score_token_ids(model, [TOK(texts["beta"][0])["input_ids"]], window=512)[0]
    reference.centroid = scored.embedding
    events = []
    table, summary = similarity_table(model, TOK, texts, reference, k=0.5, max_tokens=128, on_event=events.append)
    assert list(table["set"]) == ["alpha", "alpha", "beta"]
    assert [(e.sets_done, e.sets_total, e.last_set, e.texts_scored) for e in events] == [(1, 2, "alpha", 2),
                                                                                      (2, 2, "beta", 3)]
    assert table.loc[table["set"] == "beta", "embedding_cosine"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert {"min_k_pp", "min_k", "ppl", "ngram_overlap", "js_divergence"} <= set(table.columns)
    assert summary.loc["alpha", ("min_k_pp", "count")] == 2
    assert table.attrs["k"] == 0.5 and table.attrs["window"] == 512


def test_quantized_model_scores_and_generates_but_is_not_pruned(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    quantized = load_model(str(folder), quantization="8bit")
    scores = score_token_ids(quantized.model, [random_ids(1, 12)[0].tolist()], window=64)[0]
    assert torch.isfinite(scores.z).all()
    with pytest.raises(ConfigError, match="quantized"):
        prune_model(quantized.model, random_ids(2, 8), PruneConfig(device="cpu"))


def test_quantized_load_reports_smaller_footprint(tmp_path):
    from calib_core.models import describe_model

    folder = save_tiny_folder(tmp_path / "tiny", "llama")
    full = describe_model(load_model(str(folder)).model)
    four_bit = describe_model(load_model(str(folder), quantization="4bit").model)
    assert four_bit["quantized"] and not full["quantized"]
    assert four_bit["memory_footprint_bytes"] < full["memory_footprint_bytes"]


# ---------------------------------------------------------------- what Min-K%++ scores


def _short_and_long_sets():
    sets.save_set("short-texts", [{"text": f"a short text {i}."} for i in range(12)], {"kind": "self-generated"})
    sets.save_set("long-texts", [{"text": f"a much longer document number {i}. " * 8} for i in range(4)])


def test_scoring_windows_are_the_calibration_windows_with_bos_first():
    tok = char_tokenizer(add_bos=True)
    assert special_affixes(tok) == ([tok.bos_token_id], []) and special_affixes(TOK) == ([], [])
    windows = sample_for_scoring("builtin:news", tok, 4, seed=3, seqlen=24, mode="document")
    calibration = build_calibration("builtin:news", tok, 4, 24, 3, "document")
    assert [w[1:] for w in windows] == calibration.input_ids.tolist()
    assert all(w[0] == tok.bos_token_id for w in windows)
    assert sample_for_scoring("builtin:news", tok, 4, seed=3, scoring="texts") == sample_texts("builtin:news", 4, 3)
    with pytest.raises(SourceError, match="windows, texts"):
        sample_for_scoring("builtin:news", tok, 4, scoring="sentences")


def test_sets_of_short_and_long_texts_are_scored_on_equal_windows():
    tok, model = char_tokenizer(add_bos=True), tiny_model("llama")
    _short_and_long_sets()
    named = {s: sample_for_scoring(s, tok, 3, seqlen=40, mode="concat") for s in ("set:short-texts", "set:long-texts")}
    table, _ = similarity_table(model, tok, named, k=0.5)
    assert table["tokens"].tolist() == [41] * 6  # BOS + 40 window tokens, every one of them scored
    assert table.attrs["scoring"] == {"set:short-texts": "windows", "set:long-texts": "windows"}
    scores = score_token_ids(model, [named["set:short-texts"][0]], window=41)[0]
    assert scores.logp.numel() == 40 and table["min_k_pp"].iloc[0] == pytest.approx(min_k(scores.z, 0.5), abs=1e-6)
    # the per-text option scores what each text happens to be: very different lengths per set
    texts = {s: sample_for_scoring(s, tok, 3, scoring="texts") for s in ("set:short-texts", "set:long-texts")}
    by_text, _ = similarity_table(model, tok, texts, k=0.5, max_tokens=512)
    lengths = by_text.groupby("set")["tokens"].max()
    assert lengths["set:short-texts"] < 20 < 200 < lengths["set:long-texts"]
    assert by_text.attrs["scoring"]["set:short-texts"] == "texts"


def test_document_pad_padding_is_not_scored():
    tok = char_tokenizer(add_bos=True)
    sets.save_set("gen", [{"text": "z" * n} for n in (14, 15, 30)])  # 15, 16, 31 tokens with the BOS
    windows = sample_for_scoring("set:gen", tok, 10, seqlen=16, mode="document_pad")
    assert {len(w) for w in windows} <= {15, 16, 17}  # a padded text keeps its 15 real tokens, no pad id 0
    assert all(0 not in w and w[0] == tok.bos_token_id and w.count(tok.bos_token_id) == 1 for w in windows)


def test_a_set_must_be_texts_or_windows():
    with pytest.raises(SourceError, match="not a mix"):
        similarity_table(tiny_model("llama"), TOK, {"mixed": ["some text", [5, 6, 7]]})
