"""How training-like is a text? Min-K%++ (Zhang et al. 2024) and companions

Model-based, from one forward pass per window: Min-K%++ (Zhang et al. 2024), Min-K%, perplexity
and a mean-pooled hidden-state embedding. Model-free: n-gram overlap and unigram Jensen-Shannon
divergence against a reference corpus.

What is scored (sample_for_scoring):
  windows  (default) the windows a calibration set of the source would use (data.build_calibration
           with the same seqlen, mode and seed), each preceded by the tokenizer's leading special
           tokens (BOS where it adds one, as the Min-K%++ reference tokenizes), so every window token
           is scored and sets of short texts (self-generated) and long ones are scored on equally
           long items
  texts    whole texts cut to max_tokens tokens without special tokens (the first token is context,
           not scored); long texts are scored in windows whose length is recorded
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.documents import load_documents
from ..data.sources import DEFAULT_CONCAT_SEPARATOR, build_calibration
from ..data.tokens import first_tokens, special_affixes
from ..errors import PruningCancelled, SourceError
from ..scoring import min_k, pad_id, perplexity_of, score_token_ids

# Online samples of real pretraining corpora (streamed; offline they fail with a clear message).
REFERENCE_CORPORA = {
    "c4": "hf:allenai/c4:en:train",
    "slimpajama": "hf:DKYoon/SlimPajama-6B::train",
    "dclm": "hf:mlfoundations/dclm-baseline-1.0::train",
    "fineweb-edu": "hf:HuggingFaceFW/fineweb-edu:sample-10BT:train",
    "wikipedia": "hf:wikimedia/wikipedia:20231101.en:train",
}
_WORD = re.compile(r"\w+")


# ---------------------------------------------------------------- model-free measures


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@dataclass
class Reference:
    """A reference corpus digested once: its n-gram set, unigram counts and embedding centroid."""

    spec: str
    n: int
    ngram_set: set = field(repr=False)
    unigrams: Counter = field(repr=False)
    centroid: torch.Tensor | None = field(default=None, repr=False)
    documents: int = 0


def build_reference(spec: str, n: int = 3, max_docs: int = 2000, max_words: int = 2_000_000,
                    model=None, tokenizer=None, embed_samples: int = 32, window: int = 512, seed: int = 0) -> Reference:
    if n < 1:
        raise SourceError("n-gram order must be at least 1.")
    spec = REFERENCE_CORPORA.get(spec, spec)
    if spec.startswith("mix:"):  # a mix's text is its sources' texts: their references merged
        from ..data.mix import parse_mix

        parts = [build_reference(component, n, max_docs, max_words, model, tokenizer, embed_samples, window, seed)
                 for component, _weight in parse_mix(spec.removeprefix("mix:")).sources]
        centroids = [p.centroid for p in parts if p.centroid is not None]
        return Reference(spec, n, set().union(*(p.ngram_set for p in parts)), sum((p.unigrams for p in parts), Counter()),
                         torch.stack(centroids).mean(0) if centroids else None, sum(p.documents for p in parts))
    docs = load_documents(spec, part="calib", limit=max_docs)
    grams, unigrams, seen = set(), Counter(), 0
    for doc in docs:
        tokens = words(doc)[: max_words - seen]
        grams.update(ngrams(tokens, n))
        unigrams.update(tokens)
        seen += len(tokens)
        if seen >= max_words:
            break
    centroid = None
    if model is not None:
        rng = random.Random(seed)
        picked = rng.sample(docs, min(embed_samples, len(docs)))
        ids = [first_tokens(tokenizer, d, window) for d in picked]
        scored = score_token_ids(model, [i for i in ids if len(i) >= 2], window, pad_id=pad_id(tokenizer))
        centroid = torch.stack([s.embedding for s in scored]).mean(0)
    return Reference(spec, n, grams, unigrams, centroid, len(docs))


def ngram_overlap(text: str, reference: Reference) -> float:
    """Fraction of the text's word n-grams that occur in the reference corpus."""
    grams = ngrams(words(text), reference.n)
    return sum(g in reference.ngram_set for g in grams) / len(grams) if grams else float("nan")


def js_divergence(p_counts: Counter, q_counts: Counter) -> float:
    """Jensen-Shannon divergence (natural log) of two unigram distributions: 0 .. ln 2."""
    p_total, q_total = sum(p_counts.values()), sum(q_counts.values())
    if not p_total or not q_total:
        return float("nan")
    js = 0.0
    for word in set(p_counts) | set(q_counts):
        p = p_counts.get(word, 0) / p_total
        q = q_counts.get(word, 0) / q_total
        m = (p + q) / 2
        if p:
            js += 0.5 * p * math.log(p / m)
        if q:
            js += 0.5 * q * math.log(q / m)
    return js


# ---------------------------------------------------------------- per-set tables


SCORING = ("windows", "texts")


def sample_texts(spec: str, count: int, seed: int = 0, part: str = "calib") -> list[str]:
    """`count` documents of a source drawn with a seeded RNG (all of them if fewer)."""
    docs = load_documents(spec, part=part)
    if len(docs) <= count:
        return docs
    return random.Random(seed).sample(docs, count)


def sample_for_scoring(spec: str, tokenizer, count: int, seed: int = 0, scoring: str = "windows", seqlen: int = 512,
                       mode: str = "concat", concat_separator: str = DEFAULT_CONCAT_SEPARATOR) -> list:
    """What similarity_table scores for one source (see the module doc):
    windows: `count` token windows, exactly the samples build_calibration(spec, tokenizer, count, seqlen,
             seed, mode) draws, each with the tokenizer's leading special tokens first (document_pad's
             padding is left out, and a window that already starts with them gets none added);
    texts:   `count` whole texts (sample_texts); seqlen and mode do not apply."""
    if scoring == "texts":
        return sample_texts(spec, count, seed)
    if scoring != "windows":
        raise SourceError(f"Scoring must be one of {', '.join(SCORING)}, got '{scoring}'.")
    calibration = build_calibration(spec, tokenizer, count, seqlen, seed, mode, concat_separator=concat_separator)
    prefix, _suffix = special_affixes(tokenizer)
    windows = []
    for row, length in zip(calibration.input_ids.tolist(), calibration.unpadded_lengths):
        row = row[:length]
        windows.append(row if row[: len(prefix)] == prefix else prefix + row)
    return windows


@dataclass
class SimilarityProgress:
    sets_done: int
    sets_total: int
    last_set: str
    texts_scored: int
    kind: str = "similarity"


def similarity_table(model, tokenizer, named_texts: dict[str, list], reference: Reference | None = None,
                     k: float = 0.5, max_tokens: int = 512, window: int = 512, batch_size: int = 4, on_event=None,
                     cancel=None):
    """Per-sample scores for several sets -> (per-sample DataFrame, per-set summary DataFrame).
    `named_texts` maps a set name to texts (str: the `texts` scoring, cut to `max_tokens` tokens and
    scored in windows of `window`) or to token windows (lists of ids from sample_for_scoring: each
    scored whole). The `tokens` column is the length of each scored item.
    `on_event` gets a SimilarityProgress after each set."""
    import pandas as pd

    if not 0 < k <= 1:
        raise SourceError(f"K must be in (0, 1], got {k}.")
    rows, scoring = [], {}
    for done, (set_name, items) in enumerate(named_texts.items(), 1):
        if cancel is not None and cancel.is_set():
            raise PruningCancelled(f"Cancelled after {done - 1} of {len(named_texts)} sets.")
        if all(isinstance(item, str) for item in items):
            scoring[set_name] = "texts"
            ids = [first_tokens(tokenizer, t, max_tokens) for t in items]
            score_window = window
        elif all(isinstance(item, (list, tuple)) for item in items):
            scoring[set_name] = "windows"
            ids = [list(item) for item in items]
            score_window = max((len(i) for i in ids), default=2)  # one forward per window, nothing split
        else:
            raise SourceError(f"Set '{set_name}': give either texts or token windows, not a mix.")
        keep = [i for i, x in enumerate(ids) if len(x) >= 2]
        scored = score_token_ids(model, [ids[i] for i in keep], score_window, batch_size, pad_id(tokenizer))
        for i, s in zip(keep, scored):
            text = tokenizer.decode(ids[i], skip_special_tokens=True) if hasattr(tokenizer, "decode") else items[i]
            row = {
                "set": set_name, "sample": i, "tokens": len(ids[i]), "text": text,
                "min_k_pp": min_k(s.z, k), "min_k": min_k(s.logp, k), "ppl": perplexity_of(s),
            }
            if reference is not None:
                row["ngram_overlap"] = ngram_overlap(text, reference)
                row["js_divergence"] = js_divergence(Counter(words(text)), reference.unigrams)
                if reference.centroid is not None:
                    row["embedding_cosine"] = float(F.cosine_similarity(s.embedding, reference.centroid, dim=0))
            rows.append(row)
        if on_event is not None:
            on_event(SimilarityProgress(done, len(named_texts), set_name, len(rows)))
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if c not in ("set", "sample", "tokens", "text")]
    summary = table.groupby("set", sort=False)[metrics].describe(percentiles=[0.25, 0.5, 0.75])
    table.attrs.update({"k": k, "max_tokens": max_tokens, "window": window, "scoring": scoring,
                        "reference": reference.spec if reference else None})
    return table, summary


# Each score's axis label: what it is and which way is more like the pretraining data (the reference).
METRIC_LABELS = {
    "min_k_pp": "Min-K%++ (higher = more training-like)",
    "min_k": "Min-K% log-probability (higher = more training-like)",
    "ppl": "perplexity under the model (lower = more training-like)",
    "ngram_overlap": "n-gram overlap with the reference (higher = more like it)",
    "js_divergence": "JS divergence from the reference (lower = more like it)",
    "embedding_cosine": "embedding cosine to the reference (higher = more like it)",
}


def compare_sources(model, tokenizer, specs: list[str], count: int, seed: int = 0, scoring: str = "windows",
                    seqlen: int = 512, mode: str = "concat", concat_separator: str = DEFAULT_CONCAT_SEPARATOR,
                    reference: str | None = None, ngram: int = 3, k: float = 0.5, max_tokens: int = 512,
                    sampling: dict[str, tuple[str, str]] | None = None, on_event=None, cancel=None):
    """Score several sources on the same footing -> (per-sample table, per-set summary): each source's
    items drawn by sample_for_scoring (`sampling` may give a source its own (mode, separator)), the
    reference corpus built when named, then similarity_table. The CLI, the app and the reproduction
    all compare sources through this."""
    sampling = sampling or {}
    named = {spec: sample_for_scoring(spec, tokenizer, count, seed, scoring, seqlen,
                                      *sampling.get(spec, (mode, concat_separator))) for spec in specs}
    built = (build_reference(reference, ngram, model=model, tokenizer=tokenizer, window=max_tokens, seed=seed)
             if reference else None)
    return similarity_table(model, tokenizer, named, built, k, max_tokens, max_tokens, on_event=on_event,
                            cancel=cancel)

