"""Predict before you prune: rank candidate calibration sets for a stated target (an evaluation source
standing for a capability) with cheap proxies, each from dense forwards over the candidate's windows and
the target's, no pruning:

- the seed paper's: Min-K%++ of the candidate's windows (training-likeness, target-free) and its
  calibration perplexity;
- the target's: word n-gram overlap and unigram JS divergence of the candidate's text with the target's;
- mechanism-based (metrics/proxies.py): how closely the candidate's per-channel input norms match the
  target's, and the Jaccard of the masks the method would choose from each one's statistics.

Every proxy is named with the direction it ranks in; `ranking` orders candidates by one of them. Whether a
proxy predicts the measured ranking is what the validation (docs/results/advisor.md) measured; a case
outside it is said to be unvalidated."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..data import sets
from ..data.strategies import RANDOM, SELF_CALIBRATION, STRATEGIES, build_strategy_calibration
from ..errors import ConfigError
from ..experiments.stats import setting_label
from ..prune import PruneConfig


@dataclass(frozen=True)
class Proxy:
    name: str
    label: str
    higher_is_better: bool  # the direction a better calibration set is predicted in
    needs_target: bool


PROXIES = {p.name: p for p in [
    Proxy("predicted_jaccard", "predicted mask Jaccard with the target's mask (higher: more alike)", True, True),
    Proxy("norm_divergence", "channel-norm divergence from the target, mean |log2 ratio| (lower: closer)", False, True),
    Proxy("ngram_overlap", "word 3-gram overlap with the target text (higher: more alike)", True, True),
    Proxy("js_divergence", "mean over the candidate's windows of each window's unigram JS divergence from the target "
                           "text (lower: more alike)", False, True),
    Proxy("min_k_pp", "Min-K%++ of the candidate (higher: more training-like)", True, False),
    Proxy("calib_ppl", "perplexity of the candidate under the dense model (lower: more training-like)", False, False),
]}
TARGET_SEED_OFFSET = 10_000  # the target's windows are drawn with another seed than any candidate's


@dataclass(frozen=True)
class Candidate:
    """A calibration set to rank: a source (any the lab reads) and the strategy that chooses its windows."""

    source: str
    strategy: str = RANDOM

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """SOURCE or SOURCE@STRATEGY (e.g. builtin:wiki@least-ppl)."""
        source, sep, strategy = text.rpartition("@") if "@" in text else (text, "", RANDOM)
        if strategy not in STRATEGIES:
            raise ConfigError(f"Candidate '{text}': unknown strategy '{strategy}' (one of {', '.join(STRATEGIES)}).")
        return cls(source, strategy)

    @property
    def label(self) -> str:
        return self.source if self.strategy == RANDOM else f"{self.source} by {self.strategy}"


@dataclass
class AdviceSettings:
    nsamples: int = 8
    seqlen: int = 256
    seed: int = 0
    mode: str = "document"
    target_windows: int = 8
    k: float = 0.5  # Min-K%++'s fraction
    config: PruneConfig = field(default_factory=PruneConfig)


def check_case(candidates: list[Candidate], target: str, settings: AdviceSettings) -> None:
    """What can be checked before any model loads: two or more candidates, every source and the target, the
    method (its masks must be predictable) and its setting."""
    from ..data.documents import check_source
    from ..metrics.proxies import predictable

    if len(candidates) < 2:
        raise ConfigError("The advisor ranks two or more candidates; give at least two.")
    for candidate in candidates:
        check_source(candidate.source)
    check_source(target)
    config = settings.config.resolved()
    if config.method not in predictable():
        raise ConfigError(f"The advisor predicts masks of {', '.join(predictable())}; {config.method} is not one of them.")


def _windows(calibration) -> list[list[int]]:
    return [row[:n].tolist() for row, n in zip(calibration.input_ids, calibration.unpadded_lengths)]


def proxy_table(loaded, candidates: list[Candidate], target: str, settings: AdviceSettings, on_event=None) -> pd.DataFrame:
    """One row per candidate: every proxy's value for `target`, and the seconds its proxies took."""
    from ..data.sources import build_calibration
    from ..metrics.proxies import dense_channel_norms, needs_hessians, norm_divergence, packed_jaccard, packed_masks
    from ..metrics.similarity import build_reference, similarity_table

    check_case(candidates, target, settings)
    model, tokenizer = loaded.model, loaded.tokenizer
    emit = on_event or (lambda message: None)
    started = time.perf_counter()
    target_set = build_calibration(target, tokenizer, settings.target_windows, settings.seqlen,
                                   settings.seed + TARGET_SEED_OFFSET, settings.mode)
    hessians = needs_hessians(settings.config)  # SparseGPT's masks come from each set's Hessians
    target_norms = dense_channel_norms(model, target_set.input_ids, target_set.unpadded_lengths, hessians=hessians)
    target_masks = packed_masks(model, target_norms, settings.config)
    target_norms.release()  # with Hessians, [in, in] per module: not kept longer than needed
    reference = build_reference(target)
    target_seconds = time.perf_counter() - started
    rows = []
    for number, candidate in enumerate(candidates, 1):
        emit(f"candidate {number}/{len(candidates)}: {candidate.label}")
        started = time.perf_counter()
        chosen = build_strategy_calibration(candidate.source, tokenizer, settings.nsamples, settings.seqlen,
                                            settings.seed, settings.mode, candidate.strategy, model=model)
        norms = dense_channel_norms(model, chosen.input_ids, chosen.unpadded_lengths, hessians=hessians)
        predicted = packed_jaccard(packed_masks(model, norms, settings.config), target_masks)
        norms.release()
        scores, _summary = similarity_table(model, tokenizer, {candidate.label: _windows(chosen)}, reference,
                                            k=settings.k, max_tokens=settings.seqlen, window=settings.seqlen)
        rows.append({"candidate": candidate.label, "source": candidate.source, "strategy": candidate.strategy,
                     "predicted_jaccard": predicted,
                     "norm_divergence": norm_divergence(norms, target_norms),
                     "ngram_overlap": float(scores["ngram_overlap"].mean()),
                     "js_divergence": float(scores["js_divergence"].mean()),
                     "min_k_pp": float(scores["min_k_pp"].mean()),
                     "calib_ppl": float(scores["ppl"].mean()),
                     "seconds": time.perf_counter() - started})
    table = pd.DataFrame(rows)
    table.attrs.update(target=target, target_seconds=target_seconds, method=settings.config.method,
                       setting=setting_label(settings.config.as_dict()))
    return table


def ranking(table: pd.DataFrame, proxy: str) -> pd.DataFrame:
    """The candidates best first by `proxy` (ties: the order given), with their rank."""
    chosen = PROXIES[proxy]
    ranked = table.sort_values(proxy, ascending=not chosen.higher_is_better, kind="stable").reset_index(drop=True)
    return ranked.assign(rank=range(1, len(ranked) + 1))


def self_generated(source: str, strategy: str) -> bool:
    """Whether a candidate is text the model wrote itself: self-calibration's windows or a self-generated set."""
    return strategy == SELF_CALIBRATION or (source.startswith("set:") and sets.is_self_generated(source[len("set:"):]))


def self_generated_caution(ranked: pd.DataFrame) -> str | None:
    """A warning where a ranking holds self-generated candidates: in the validation every target-aware proxy
    ranked such text among the last, yet with Wanda and OWL on gemma3-270m it often pruned best for the target
    (docs/results/advisor.md, Reading the results). None where there is none."""
    names = [r.candidate for r in ranked.itertuples() if self_generated(r.source, r.strategy)]
    if not names:
        return None
    return (f"{', '.join(names)}: text the model wrote itself. In the validation every proxy that compares a "
            f"candidate with the target ranked self-generated text 9th or 10th of 10, for every target on both "
            f"models, yet on gemma3-270m it pruned best for the target in 8 of 24 Wanda and OWL cases: its rank "
            f"here says little; prune with it (or verify enough candidates to include it) before ruling it out.")


# The committed validation (docs/results/advisor.md's table): one row per model, method, setting, target and
# proxy with the rank correlations it reached. Absent until the validation has run.
VALIDATION_TABLE = Path(__file__).resolve().parent.parent / "data" / "advisor_validation.csv"
LOW_CEILING = 0.5  # below it a case's measured ranking is mostly seed noise (advisor_validation.seed_reliability)


def verdict_of(case: pd.DataFrame) -> str:
    """The protocol's rule over one (method, setting, target, proxy) case's rows, one per model: predicts (mean
    Spearman >= 0.8, every interval's lower end above 0.5, the highest cost share <= 10% of brute force; an
    unknown cost never predicts), weak (mean above 0.3) or does not predict."""
    mean = float(case["spearman"].mean())
    cost = float(pd.to_numeric(case["cost_share"], errors="coerce").max()) if "cost_share" in case else float("nan")
    if mean >= 0.8 and (case["spearman_low"] > 0.5).all() and cost <= 0.10:
        return "predicts"
    return "weak" if mean > 0.3 else "does not predict"


# The candidate sets a validation case ranks (advisor_validation.scopes): the protocol's verdicts are over ALL.
ALL, ONE_SOURCE, ACROSS_SOURCES = "all candidates", "strategies on one source", "across sources"


def protocol_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The validation table's rows over every candidate (tables written before scopes had only those)."""
    return rows[rows["scope"] == ALL] if "scope" in rows else rows


UNVALIDATED = "unvalidated"
# A proxy whose computation changed after validation rows were written, with its current revision: rows of
# an earlier one (rows without a `proxy_revision` are of revision 0) say nothing of the proxy as it is now.
MASK_PROXY = "predicted_jaccard"  # the one proxy that depends on the method and setting
PROXY_REVISIONS = {("sparsegpt", MASK_PROXY): 1}
REVISED = {("sparsegpt", "predicted_jaccard"): (
    "revision 0 was a per-row static score that ranked weights as Wanda's does (rank correlation 0.9999 with the "
    "Wanda proxy); revision 1 runs SparseGPT's own block-wise selection")}


def proxy_revision(method: str, proxy: str) -> int:
    """The revision a (method, proxy)'s rows must carry to describe the proxy as it is computed now."""
    return PROXY_REVISIONS.get((method, proxy), 0)


def current_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows (of the validation table or the proxies' CSV) that describe the proxies as they are computed now:
    rows of an earlier PROXY_REVISIONS revision left out."""
    if rows.empty:
        return rows
    have = pd.to_numeric(rows["proxy_revision"], errors="coerce").fillna(0) if "proxy_revision" in rows \
        else pd.Series(0, index=rows.index)
    wanted = [proxy_revision(str(m) if m == m else "", p) for m, p in zip(rows["method"], rows["proxy"])]
    return rows[have.astype(int).to_numpy() == wanted]


@dataclass(frozen=True)
class ValidationNote:
    """What the committed validation says of a case: its verdict under the protocol's rule (predicts, weak,
    does not predict) or UNVALIDATED, and the text that quotes it."""

    verdict: str
    text: str

    @property
    def predicts(self) -> bool:
        return self.verdict == "predicts"


def validation_note(proxy: str, method: str, setting: str, target: str, model: str | None = None,
                    table: Path = VALIDATION_TABLE) -> ValidationNote:
    """How well `proxy` predicted the measured ranking where the validation matches this case (method,
    setting and target), with the protocol's verdict over the validated models, or a warning that the case
    is outside what was validated (quoting the proxy's record on the validated targets for this method and
    setting, where there is one). With `model`, says so when that model was not among the validated ones
    (the numbers are then another model's)."""
    check = "check it with --verify K (prunes the top K candidates)"
    outside = (f"Warning: {proxy} is not validated for {method} {setting} with target {target}: treat this ranking "
               f"as a guess, and {check}.")
    if not table.exists():
        return ValidationNote(UNVALIDATED, outside + " (No validation has been recorded yet; see docs/results/advisor.md.)")
    all_rows = pd.read_csv(table)
    rows = current_rows(all_rows)
    def of_case(frame):
        return ((frame["method"] == method) & (frame["proxy"] == proxy)).any()

    if (method, proxy) in REVISED and of_case(all_rows) and not of_case(rows):  # only an earlier revision's rows
        return ValidationNote(UNVALIDATED, outside + f" (The recorded validation of {proxy} for {method} is of an "
                                                     f"earlier computation: {REVISED[(method, proxy)]}.)")
    scoped = rows[(rows["proxy"] == proxy) & (rows["method"] == method) & (rows["setting"] == setting)]
    alike = protocol_rows(scoped)
    match = alike[alike["target"] == target]
    if match.empty:
        if alike.empty:
            return ValidationNote(UNVALIDATED, outside)
        return ValidationNote(UNVALIDATED, outside + (
            f" On the validated targets ({', '.join(sorted(alike['target'].unique()))}) with {method} {setting} its "
            f"Spearman ranged from {alike['spearman'].min():.2f} to {alike['spearman'].max():.2f} (mean "
            f"{alike['spearman'].mean():.2f})."))
    parts = [f"{r.model}: Spearman {r.spearman:.2f} [{r.spearman_low:.2f}, {r.spearman_high:.2f}]"
             + _both_text(r) + f", Kendall {r.kendall:.2f}, {int(r.candidates)} candidates{_ceiling_text(r)}"
             for r in match.itertuples()]
    verdict = verdict_of(match)
    plain = plain_words(scoped[scoped["target"] == target], proxy)
    note = ((plain + " " if plain else "")
            + f"Validated ({method} {setting}, target {target}; docs/results/advisor.md): " + "; ".join(parts)
            + _cost_text(match) + f". Verdict: {verdict}" + ("." if verdict == "predicts" else
                                         f" (the bar: mean Spearman 0.8, every interval above 0.5, at most 10% of "
                                         f"the cost of pruning with every candidate); {check}."))
    if model is not None and model not in set(match["model"]):
        note += f" {model} was not among the validated models: these are other models' numbers."
    ceilings = match["noise_ceiling"] if "noise_ceiling" in match else pd.Series(dtype=float)
    if len(ceilings) and (ceilings < LOW_CEILING).all():
        note += (f" There the validation's candidates pruned alike within seed noise (the measured ranking barely "
                 f"repeats from seed to seed: its seed-noise reference is below {LOW_CEILING}), so no proxy can rank "
                 f"them and the choice among such sets matters little for this target.")
    return ValidationNote(verdict, note)


RANKS, RANKS_WEAKLY = 0.5, 0.3  # mean Spearman at which plain_words says a proxy ranks a kind of choice (weakly)


def plain_words(scoped: pd.DataFrame, proxy: str) -> str:
    """What one case's validation supports, in words: whether the proxy ranked random draws from different
    sources (the choice of domain) and one source's windows chosen by different strategies as pruning did
    (mean Spearman over the models: RANKS or more ranks, RANKS_WEAKLY or more weakly, below does not), and,
    where it does not rank the second, to prune the top candidates instead. Empty for a table without scopes."""
    if "scope" not in scoped:
        return ""
    means = scoped.groupby("scope")["spearman"].mean()
    if ACROSS_SOURCES not in means or ONE_SOURCE not in means:
        return ""

    def how(mean: float) -> str:
        return "ranks" if mean >= RANKS else "ranks only weakly" if mean >= RANKS_WEAKLY else "does not rank"

    across, within = float(means[ACROSS_SOURCES]), float(means[ONE_SOURCE])
    text = (f"In the validation {proxy} {how(across)} sets from different sources (wiki, news, books, code, a mix: "
            f"mean Spearman {across:.2f}) and {how(within)} sets chosen from one source by different strategies "
            f"({within:.2f}).")
    if within < RANKS:
        text += (" So it can tell you which domain to calibrate on, not which set within a domain: for that choice "
                 "prune the top few candidates (--verify K) and compare." if across >= RANKS else
                 " Prune the top few candidates (--verify K) rather than trust this order.")
    return text


def _cost_text(match: pd.DataFrame) -> str:
    """The case's cost share (its highest over the models), where the table has one."""
    cost = float(pd.to_numeric(match["cost_share"], errors="coerce").max()) if "cost_share" in match else float("nan")
    return f"; ranking by it costs {cost:.0%} of pruning with every candidate" if cost == cost else ""


def _both_text(row) -> str:
    """The interval that resamples the candidates too, where the table has it."""
    low, high = getattr(row, "spearman_low_both", float("nan")), getattr(row, "spearman_high_both", float("nan"))
    return f" over seeds, [{low:.2f}, {high:.2f}] over seeds and candidates" if low == low and high == high else ""


BEST = "best"  # rank by the proxy that agreed best with pruning in the validation (best_validated_proxy)
DEFAULT_PROXY = "predicted_jaccard"


def best_validated_proxy(method: str, setting: str, target: str, table: Path = VALIDATION_TABLE) -> tuple[str, str]:
    """(proxy, why): the proxy with the highest mean Spearman over the validated models for this method, setting
    and target; where the target was not validated, over every validated target with this method and setting;
    DEFAULT_PROXY where neither was."""
    rows = protocol_rows(current_rows(pd.read_csv(table))) if table.exists() else \
        pd.DataFrame(columns=["method", "setting", "target"])
    alike = rows[(rows["method"] == method) & (rows["setting"] == setting)]
    for chosen, scope in [(alike[alike["target"] == target], f"{method} {setting} with target {target}"),
                          (alike, f"{method} {setting} over the validated targets")]:
        if not chosen.empty:
            means = chosen.groupby("proxy")["spearman"].mean()
            best = str(means.idxmax())
            return best, f"ranked by {best}, the proxy that agreed best with pruning in the validation for {scope} " \
                         f"(mean Spearman {means[best]:.2f})"
    return DEFAULT_PROXY, f"ranked by {DEFAULT_PROXY}: no proxy was validated for {method} {setting}"


def _ceiling_text(row) -> str:
    """A validated case's noise ceiling, where the table has one (tables written before it had none)."""
    ceiling = getattr(row, "noise_ceiling", float("nan"))
    return f", seed-noise reference {ceiling:.2f}" if ceiling == ceiling else ""


def verify_specs(model: str, dtype: str, top: pd.DataFrame, target: str, settings: AdviceSettings,
                 eval_windows: int = 8) -> list:
    """The runs that check `top`'s candidates: each pruned as advised (same windows, method and setting) and
    evaluated on `target`."""
    from ..runs.spec import EvalSpec, RunSpec

    return [RunSpec(model=model, dtype=dtype, calib=row.source, strategy=row.strategy, nsamples=settings.nsamples,
                    seqlen=settings.seqlen, seed=settings.seed, mode=settings.mode, config=settings.config,
                    evaluation=EvalSpec([target], windows=eval_windows)) for row in top.itertuples()]


def verify(model: str, dtype: str, top: pd.DataFrame, target: str, settings: AdviceSettings,
           eval_windows: int = 8, store=None, on_event=None, cancel=None, origin: str = "cli") -> pd.DataFrame:
    """Run `verify_specs` (each an ordinary recorded run): the measured perplexity on `target` of each of
    `top`'s candidates, next to its advised rank."""
    from ..runs.pipeline import run_prune

    rows = []
    for row, spec in zip(top.itertuples(), verify_specs(model, dtype, top, target, settings, eval_windows)):
        record = run_prune(spec, on_event, cancel, store=store, origin=origin)
        rows.append({"rank": row.rank, "candidate": row.candidate, f"ppl {target}": record["perplexity"][0]["ppl"],
                     "run": record["run_id"]})
    return pd.DataFrame(rows)
