"""Calibration strategies: how the nsamples windows of a run are chosen.

`random` is the seeded draw of data/sources.py (the default, and the baseline every other strategy is
compared with). The pool strategies first draw a candidate pool the same way (pool_factor x nsamples
windows of seqlen tokens from the run's source, with the run's mode and seed) and keep nsamples of them:

  least-ppl          the candidates with the lowest mean token cross-entropy under the dense model
                     (ties: the earlier candidate)
  unique-tokens      model-free greedy coverage (ZipCal): repeatedly the candidate adding the most normalised
                     token strings not yet seen (ties: the earlier candidate); each step looks at a seeded
                     random subsample of the remaining candidates when more than coverage_subsample remain
  activation-kmeans  COLA's selection stage (stage 3 of its three; stages 1-2, choosing domain-matched
                     datasets and reformatting them, are not ours): each decoder layer's output mean-pooled
                     over the window's real tokens, L2-normalised, the layers concatenated, a seeded Gaussian
                     projection to kmeans_dim dimensions, k-means (k = nsamples, k-means++ seeding), and for
                     each centroid in turn the nearest candidate not already taken

Two strategies make their windows instead of choosing them:

  self-calibration   the model writes its windows from its start token alone, each generation running to EOS
                     and further generations filling the window, with the paper's temperature schedule
                     (data/self_calibration.py; Williams et al., NAACL 2025); the run's source is not read
  icl-format         k-shot prompts of answered downstream-task items (data/task_prompts.py: BBC News topics or
                     worked arithmetic, stand-ins for Bandari et al.'s datasets), cut into windows; the run's
                     source is not read

Every strategy that changed what it does since its first version has a `revision`, which sweep point keys name.

Mixes of sources are a source kind (`mix:`, data/mix.py): any strategy draws from one.

Every strategy's record (CalibrationSet.strategy, in the run record and a saved set) holds its name and
settings, the pool (source, size, seed, fingerprint), the chosen candidates' indices in the pool, the
score each was ranked by, and the seconds the selection took.
"""

from __future__ import annotations

import math
import random as random_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, SourceError
from .self_calibration import FIRST_TOKEN_RULES, TEMPERATURE_SHAPES
from .task_prompts import TASKS
from .sources import CalibrationSet, build_calibration, draw_windows, fingerprint_tokens

RANDOM = "random"
SELF_CALIBRATION = "self-calibration"


@dataclass(frozen=True)
class Setting:
    """One strategy setting: its name (a key of the run's strategy_options), default and bounds."""

    name: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The value in this setting's type, or a ConfigError naming the setting and its range."""
        kind = type(self.default)
        try:
            if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
                raise ValueError
            value = kind(value) if kind is not str else str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"Strategy setting {self.name} must be a{'n integer' if kind is int else ' number'}, "
                              f"got {value!r}.") from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"Strategy setting {self.name} must be one of {', '.join(self.choices)}, got {value!r}.")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"Strategy setting {self.name} must be in [{self.low}, {self.high}], got {value}.")
        return value


POOL_FACTOR = Setting("pool_factor", 10, "candidate windows per calibration window (the pool is pool_factor x "
                      "nsamples windows; 1 keeps the whole pool)", low=1, high=1000)
SCORE_BATCH = Setting("score_batch_size", 8, "windows per dense forward while scoring the pool", low=1, high=1024)


@dataclass
class Selection:
    """What a strategy returns: windows (pool rows, or windows it made) and what it ranked them by."""

    ids: torch.Tensor
    lengths: list[int]
    chosen: list[int] | None = None  # indices in the pool
    scores: list[float] | None = None  # the score of each chosen candidate, in chosen order
    score: str | None = None  # what the scores are
    pool_scores: list[float] | None = None  # every candidate's score, when the ranking used them all
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str  # one line for pickers
    explain: str  # a few sentences for the Calibration data page
    needs_model: bool
    uses_pool: bool  # draws a candidate pool from the run's source
    settings: tuple[Setting, ...]
    select: Callable | None  # (context: SelectionContext) -> Selection; None for random
    # Raised when what the strategy does changes: sweep point keys name it (from 1), so runs of an earlier
    # version are never taken for runs of this one.
    revision: int = 0


@dataclass
class SelectionContext:
    """What a strategy may use: the pool (pool strategies), the model and tokenizer, its settings."""

    tokenizer: object
    nsamples: int
    seqlen: int
    seed: int
    options: dict
    source: str
    pool_ids: torch.Tensor | None = None
    pool_lengths: list[int] | None = None
    model: object | None = None


# ---------------------------------------------------------------- dense forwards over the pool


def _forward_batches(model, ids: torch.Tensor, lengths: list[int], batch_size: int, hidden: bool):
    """Per batch of pool windows: (row indices, outputs, mask of real tokens) from one dense forward.
    For hidden states only the decoder runs (no LM head: its logits would be the largest tensor)."""
    device = next(model.parameters()).device
    if hidden:
        model = getattr(model, "base_model", model)
    with torch.inference_mode():
        for start in range(0, ids.shape[0], batch_size):
            rows = list(range(start, min(start + batch_size, ids.shape[0])))
            batch = ids[rows].to(device)
            real = torch.zeros(batch.shape, dtype=torch.bool, device=device)
            for i, row in enumerate(rows):
                real[i, : lengths[row]] = True
            yield rows, model(input_ids=batch, use_cache=False, output_hidden_states=hidden), real


def window_cross_entropy(model, ids: torch.Tensor, lengths: list[int], batch_size: int = 8) -> list[float]:
    """Mean next-token cross-entropy (nats) over each window's real tokens: log of its perplexity."""
    out = [0.0] * ids.shape[0]
    for rows, result, real in _forward_batches(model, ids, lengths, batch_size, hidden=False):
        logits = result.logits[:, :-1].float()
        target = ids[rows, 1:].to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        weight = real[:, 1:].float()
        for i, row in enumerate(rows):
            out[row] = float((loss[i] * weight[i]).sum() / weight[i].sum().clamp_min(1))
    return out


def layer_features(model, ids: torch.Tensor, lengths: list[int], batch_size: int = 8) -> torch.Tensor:
    """[pool, layers x hidden]: each decoder layer's output mean-pooled over the window's real tokens and
    L2-normalised, the layers concatenated (COLA's sample representation)."""
    features = [None] * ids.shape[0]
    for rows, result, real in _forward_batches(model, ids, lengths, batch_size, hidden=True):
        weight = real.float().unsqueeze(-1)
        pooled = [(h.float() * weight).sum(1) / weight.sum(1).clamp_min(1) for h in result.hidden_states[1:]]
        joined = torch.cat([F.normalize(p, dim=-1) for p in pooled], dim=-1).cpu()
        for i, row in enumerate(rows):
            features[row] = joined[i]
    return torch.stack(features)


# ---------------------------------------------------------------- the strategies


def _least_ppl(ctx: SelectionContext) -> Selection:
    losses = window_cross_entropy(ctx.model, ctx.pool_ids, ctx.pool_lengths, ctx.options["score_batch_size"])
    chosen = sorted(range(len(losses)), key=lambda i: (losses[i], i))[: ctx.nsamples]
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen,
                     [losses[i] for i in chosen], "mean token cross-entropy under the dense model (nats; lower "
                     "is chosen)", pool_scores=losses)


def normalised_tokens(tokenizer, ids: torch.Tensor, lengths: list[int]) -> list[set[str]]:
    """Per window, its set of normalised token strings: each id decoded alone, lower-cased, surrounding
    whitespace stripped; tokens that are only whitespace (or decode to nothing) are dropped."""
    vocabulary: dict[int, str] = {}
    out = []
    for row, length in zip(ids.tolist(), lengths):
        strings = set()
        for token in row[:length]:
            if token not in vocabulary:
                vocabulary[token] = tokenizer.decode([token]).strip().lower()
            if vocabulary[token]:
                strings.add(vocabulary[token])
        out.append(strings)
    return out


def greedy_coverage(token_sets: list[set], count: int, subsample: int, seed: int) -> tuple[list[int], list[int]]:
    """`count` candidates chosen one by one, each adding the most not-yet-seen strings among the remaining
    candidates (a seeded random subsample of `subsample` of them when more remain); ties: the lower
    index. Returns the chosen indices and the new strings each added."""
    rng = random_module.Random(seed)
    seen: set = set()
    remaining = list(range(len(token_sets)))
    chosen, gains = [], []
    for _ in range(count):
        looked_at = sorted(rng.sample(remaining, subsample)) if len(remaining) > subsample else remaining
        best = max(looked_at, key=lambda i: (len(token_sets[i] - seen), -i))
        gains.append(len(token_sets[best] - seen))
        seen |= token_sets[best]
        chosen.append(best)
        remaining.remove(best)
    return chosen, gains


def _unique_tokens(ctx: SelectionContext) -> Selection:
    sets_ = normalised_tokens(ctx.tokenizer, ctx.pool_ids, ctx.pool_lengths)
    chosen, gains = greedy_coverage(sets_, ctx.nsamples, ctx.options["coverage_subsample"], ctx.seed)
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen, [float(g) for g in gains],
                     "new normalised token strings the candidate added at its step (higher is chosen)",
                     details={"normalisation": "each token id decoded alone, lower-cased, whitespace stripped; "
                                               "whitespace-only tokens dropped",
                              "distinct_strings": len(set().union(*(sets_[i] for i in chosen)))})


def random_projection(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """features @ R with R a seeded standard Gaussian [features, dim] matrix scaled by 1/sqrt(dim)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    return features.double() @ matrix


def nearest_distinct(points: np.ndarray, centroids: np.ndarray) -> tuple[list[int], list[float]]:
    """For each centroid in order, the nearest point not taken by an earlier centroid, and its distance."""
    distances = np.linalg.norm(points[:, None, :] - centroids[None, :, :], axis=-1)
    taken: set[int] = set()
    chosen, gaps = [], []
    for c in range(centroids.shape[0]):
        for p in np.argsort(distances[:, c], kind="stable"):
            if int(p) not in taken:
                taken.add(int(p))
                chosen.append(int(p))
                gaps.append(float(distances[p, c]))
                break
    return chosen, gaps


def _activation_kmeans(ctx: SelectionContext) -> Selection:
    from scipy.cluster.vq import kmeans2

    features = layer_features(ctx.model, ctx.pool_ids, ctx.pool_lengths, ctx.options["score_batch_size"])
    projected = random_projection(features, ctx.options["kmeans_dim"], ctx.seed).numpy()
    centroids, labels = kmeans2(projected, ctx.nsamples, iter=ctx.options["kmeans_iterations"], minit="++",
                                seed=np.random.default_rng(ctx.seed), missing="warn")
    chosen, gaps = nearest_distinct(projected, centroids)
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen, gaps,
                     "distance of the candidate to its centroid in the projection (the nearest is chosen)",
                     details={"features": int(features.shape[1]), "cluster_sizes": np.bincount(
                         labels, minlength=ctx.nsamples).tolist()})


def _self_calibration(ctx: SelectionContext) -> Selection:
    from .self_calibration import generate_windows

    ids, details = generate_windows(ctx.model, ctx.tokenizer, ctx.nsamples, ctx.seqlen, ctx.seed, ctx.options)
    return Selection(ids, [ctx.seqlen] * ctx.nsamples, details=details)


def _icl_format(ctx: SelectionContext) -> Selection:
    from .task_prompts import task_items
    from .tokens import encode

    shots, task, rationale = ctx.options["shots"], ctx.options["task"], ctx.options["rationale"] == "yes"
    # About 100 tokens per item: enough prompts that the windows rarely overlap.
    prompts_needed = max(8, math.ceil(2 * ctx.nsamples * ctx.seqlen / (100 * shots)))
    items = task_items(task, prompts_needed * shots, ctx.seed, rationale)
    prompts = ["\n\n".join(items[i : i + shots]) for i in range(0, len(items), shots)]
    token_docs = encode(ctx.tokenizer, [p + "\n\n" for p in prompts])
    windows = draw_windows(token_docs, ctx.nsamples, ctx.seqlen, ctx.seed, "concat")
    return Selection(windows.ids, windows.unpadded_lengths, details={
        "task": task, "prompts": len(prompts), "items": len(items),
        "rationale": rationale if task == "arithmetic" else None,
        "format": "k items per prompt, each with its answer (in-context examples), items and prompts joined by "
                  "blank lines and cut into windows; a synthetic stand-in for Bandari et al.'s task data"})


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy(RANDOM, "seeded random windows of the source (the baseline)",
             "Windows of the source drawn at random with the run's seed and sampling mode. Every other strategy "
             "is measured against this one.", False, False, (), None),
    Strategy("least-ppl", "the pool windows the dense model finds most predictable",
             "Draws a pool of candidate windows (pool factor x nsamples), scores each by its perplexity under the "
             "dense model and keeps the nsamples lowest: the baseline of ZipCal and COLA.",
             True, True, (POOL_FACTOR, SCORE_BATCH), _least_ppl),
    Strategy("unique-tokens", "model-free: the pool windows covering the most distinct tokens",
             "Greedy coverage (ZipCal): from a pool of candidate windows, repeatedly keeps the one that adds the "
             "most token strings not yet seen (lower-cased, whitespace stripped). Needs no model, so it costs "
             "almost nothing.",
             False, True, (POOL_FACTOR, Setting("coverage_subsample", 2000, "candidates looked at per step (a seeded "
                                                "random subsample when more remain; ZipCal: 2,000)", low=1,
                                                high=10**7)), _unique_tokens),
    Strategy("activation-kmeans", "COLA's selection stage: pool windows spread over the activation space",
             "COLA's selection stage (stage 3 of 3; its domain choice and reformatting stages are not included): every pool window is described by the mean activation of each layer, projected to a "
             "few dimensions and clustered with k-means into nsamples clusters; the window nearest each centre is "
             "kept, so the set covers diverse behaviour of the model.",
             True, True, (POOL_FACTOR, SCORE_BATCH,
                          Setting("kmeans_dim", 64, "random-projection dimensions (COLA: 64)", low=1, high=4096),
                          Setting("kmeans_iterations", 50, "k-means iterations", low=1, high=10_000)),
             _activation_kmeans),
    Strategy(SELF_CALIBRATION, "the model writes its own windows from BOS (no corpus)",
             "The model writes every window itself, starting from its start token alone and sampling until its "
             "end token; further generations fill the rest of the window (Williams et al., NAACL 2025). The "
             "temperature moves from a start to an end value over the first steps of each generation, then holds; "
             "the paper's headline runs sample at 1.0 throughout. For a multilingual vocabulary the first token is "
             "an English stop word, as in the paper. No corpus is read.",
             True, False, (Setting("temperature_start", 1.0, "temperature of the first sampled token of a "
                                   "generation (the paper's headline runs: 1.0)", low=0.01, high=10.0),
                           Setting("temperature_end", 1.0, "temperature after the ramp (the paper's headline "
                                   "runs: 1.0)", low=0.01, high=10.0),
                           Setting("ramp_steps", 10, "generation steps over which the temperature moves from the "
                                   "start to the end value, held after (the paper's ablation: 10)", low=1, high=10**6),
                           Setting("temperature_shape", "linear", "; ".join(f"{k}: {v}" for k, v in
                                                                          TEMPERATURE_SHAPES.items()),
                                   choices=tuple(TEMPERATURE_SHAPES)),
                           Setting("first_token", "auto", "; ".join(f"{k}: {v}" for k, v in FIRST_TOKEN_RULES.items()),
                                   choices=tuple(FIRST_TOKEN_RULES)),
                           Setting("generation_batch_size", 16, "generations sampled together", low=1, high=1024)),
             _self_calibration, revision=1),
    Strategy("icl-format", "k-shot task prompts (news topics or worked arithmetic)",
             "Downstream task data formatted as in-context prompts (Bandari et al., EMNLP 2024): each prompt holds k "
             "answered items of a task, and the prompts are cut into windows. Offline the tasks are stand-ins for "
             "the paper's datasets: BBC News topic classification (headline, opening, topic) from the news corpus' "
             "calibration part, or synthetic arithmetic with its worked steps. The run's source is not read.",
             False, False, (Setting("task", "news-topic", "; ".join(f"{k}: {v}" for k, v in TASKS.items()),
                                    choices=tuple(TASKS)),
                            Setting("shots", 3, "answered items per prompt (k)", low=1, high=64),
                            Setting("rationale", "yes", "arithmetic answers with their worked steps (chain of "
                                    "thought): yes or no", choices=("yes", "no"))),
             _icl_format, revision=1),
)}


def check_strategy(name: str, options: dict | None = None) -> dict:
    """The strategy's settings with defaults filled in, or a ConfigError (unknown strategy or setting, a
    value out of range: a pool factor below 1 would make the pool smaller than nsamples)."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown calibration strategy '{name}'; known: {', '.join(STRATEGIES)}.")
    strategy = STRATEGIES[name]
    known = {s.name: s for s in strategy.settings}
    unknown = set(options or {}) - set(known)
    if unknown:
        raise ConfigError(f"Strategy {name} has no setting {', '.join(sorted(unknown))}; "
                          f"its settings: {', '.join(known) or 'none'}.")
    return {s.name: s.check((options or {}).get(s.name, s.default)) for s in strategy.settings}


def non_default(name: str, options: dict | None) -> dict:
    """The settings that differ from the strategy's defaults (what a record or a command line states)."""
    defaults = {s.name: s.default for s in STRATEGIES[name].settings} if name in STRATEGIES else {}
    return {k: v for k, v in (options or {}).items() if defaults.get(k, object()) != v}


def selection_key(source: str, tokenizer, nsamples: int, seqlen: int, seed: int, mode: str, concat_separator: str,
                  strategy: str, options: dict, text_column) -> tuple:
    """What a selection depends on besides the dense model (sweeps reuse a selection across points)."""
    return (source, getattr(tokenizer, "name_or_path", ""), nsamples, seqlen, seed, mode, concat_separator, strategy,
            tuple(sorted(options.items())), text_column)


def build_strategy_calibration(source: str, tokenizer, nsamples: int, seqlen: int, seed: int = 0,
                               mode: str = "document", strategy: str = RANDOM, options: dict | None = None,
                               model=None, text_column: str | None = None, concat_separator: str = "\n\n",
                               cache: dict | None = None) -> CalibrationSet:
    """The run's calibration windows chosen by `strategy` (random: build_calibration's draw, unchanged).
    A model-based strategy runs its forwards on `model` as it is: call it before pruning. `cache` (a dict a
    sweep keeps) reuses a selection made for the same inputs on the same dense model."""
    resolved = check_strategy(strategy, options)
    chosen_by = STRATEGIES[strategy]
    if chosen_by.select is None:
        return build_calibration(source, tokenizer, nsamples, seqlen, seed, mode, text_column,
                                 concat_separator=concat_separator)
    if chosen_by.needs_model and model is None:
        raise ConfigError(f"Strategy {strategy} needs the model to score or generate its windows.")
    key = selection_key(source, tokenizer, nsamples, seqlen, seed, mode, concat_separator, strategy, resolved,
                        text_column)
    if cache is not None and key in cache:
        reused = cache[key]
        return CalibrationSet(**{**reused.__dict__, "strategy": {**reused.strategy, "reused": True}})
    started = time.perf_counter()
    pool = None
    context = SelectionContext(tokenizer, nsamples, seqlen, seed, resolved, source, model=model)
    if chosen_by.uses_pool:
        pool = build_calibration(source, tokenizer, resolved["pool_factor"] * nsamples, seqlen, seed, mode,
                                 text_column, concat_separator=concat_separator)
        context.pool_ids, context.pool_lengths = pool.input_ids, pool.unpadded_lengths
        if pool.nsamples < nsamples:  # a token tensor is its own pool, whatever its size
            raise SourceError(f"The pool of {source} has {pool.nsamples} windows, fewer than nsamples {nsamples}.")
    pool_seconds = time.perf_counter() - started
    selection = chosen_by.select(context)
    seconds = time.perf_counter() - started
    record = {"name": strategy, "settings": resolved, "seconds": seconds, "pool_seconds": pool_seconds,
              "pool": None if pool is None else {"source": source, "size": pool.nsamples, "seed": seed, "mode": mode,
                                                 "fingerprint": pool.fingerprint},
              "source_read": chosen_by.uses_pool,
              "chosen": selection.chosen, "scores": selection.scores, "score": selection.score,
              "pool_scores": selection.pool_scores, "details": selection.details, "reused": False}
    tok_name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    base = pool or CalibrationSet(selection.ids, source, mode, seed, tok_name, "")
    out = CalibrationSet(
        selection.ids, source, mode if chosen_by.uses_pool else ("generated" if chosen_by.needs_model else "concat"), seed, tok_name,
        fingerprint_tokens(selection.ids), base.documents, concat_separator=base.concat_separator,
        pad_id=base.pad_id, padded_samples=sum(n < seqlen for n in selection.lengths),
        eligible_documents=base.eligible_documents, special_tokens=base.special_tokens, notes=list(base.notes),
        mix=base.mix, strategy=record, unpadded_lengths=list(selection.lengths))
    if cache is not None:
        cache[key] = out
    return out


def describe_strategy(name: str, options: dict | None = None) -> str:
    """A short label: the name and its non-default settings (Results, sweep labels)."""
    changed = non_default(name, options)
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")" if changed else "")
