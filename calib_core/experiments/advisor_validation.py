"""The advisor's validation (docs/results/advisor.md): how well each proxy's ranking of candidate calibration
sets agrees with the ranking that pruning with each of them measured, per model, method, setting and
target, with bootstrap intervals over seeds, and at what cost against pruning with every candidate.

The measured side is the strategy tournament's runs (a TournamentSettings with the validation's candidates,
methods and seeds: its points are the tournament's where they match, so those runs are reused). The
predicted side recomputes each candidate's windows exactly as its runs drew them (same source, strategy,
seed, nsamples x seqlen, sampling mode) and the proxies of advisor.py on them; each (model, entry, seed)
is computed once and kept in a CSV, so the validation resumes."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.sources import BUILTIN_SOURCES
from .advisor import ACROSS_SOURCES, ALL, ONE_SOURCE, PROXIES, RANKS, TARGET_SEED_OFFSET, protocol_rows, verdict_of
from .stats import setting_label
from .tournament import CLOZE, ROUND_ONE, UNIFORM_MIX, TournamentSettings, entry_of

CLOZE_TARGET = "cloze"
CLOZE_TEXT = UNIFORM_MIX  # the cloze items come from the four builtin domains: their mix stands for them
MASK_PROXY = "predicted_jaccard"  # the one proxy that depends on the method and setting


@dataclass
class ValidationSettings:
    tournament: TournamentSettings = field(default_factory=lambda: TournamentSettings(**{
        **ROUND_ONE, "seeds": 3, "early_seeds": 3, "methods": ["wanda", "sparsegpt", "owl"],
        "extra_sources": ["builtin:news", "builtin:books", "builtin:code"]}))
    targets: list[str] = field(default_factory=lambda: [*BUILTIN_SOURCES, CLOZE_TARGET])
    target_windows: int = 8
    bootstrap: int = 1000

    def target_text(self, target: str) -> str:
        return CLOZE_TEXT if target == CLOZE_TARGET else target

    def capability(self, target: str) -> str:
        return CLOZE if target == CLOZE_TARGET else f"ppl {target}"


def candidate_points(settings: ValidationSettings, model: str) -> dict[tuple[str, int], object]:
    """(entry, seed) -> one of its points (every method and setting of an entry and seed share its windows)."""
    source = settings.tournament.source
    out = {}
    for point in settings.tournament.points(model):
        out.setdefault((entry_of(point.calibration, point.strategy, source), point.seed), point)
    return out


@dataclass(frozen=True)
class Needs:
    """What one (entry, seed) still lacks: the proxies that depend on no method (`free`) and the (method,
    setting) cases whose mask proxy it lacks."""

    free: bool
    masks: frozenset[tuple[str, str]]


def missing_proxies(proxies: pd.DataFrame, model: str, measured: pd.DataFrame, settings: ValidationSettings) -> dict:
    """(entry, seed) -> Needs for each (entry, seed) of `model`'s `measured` runs that lacks a current proxy row
    (rows of an earlier proxy revision count as missing) for a target it was measured on, or for a (method,
    setting) it was pruned with."""
    from .advisor import current_rows

    free_proxies = [name for name in PROXIES if name != MASK_PROXY]
    have: dict[tuple, set] = {}
    mine = current_rows(proxies[proxies["model"] == model]) if not proxies.empty else proxies
    for row in mine.itertuples():
        have.setdefault((row.entry, int(row.seed)), set()).add((row.target, row.proxy, row.method, row.setting))
    out = {}
    for (entry, seed), runs in measured[measured["model"] == model].groupby(["entry", "seed"]):
        present = have.get((entry, int(seed)), set())
        targets = [t for t in settings.targets if settings.capability(t) in runs and runs[settings.capability(t)].notna().any()]
        free = any((t, name, "", "") not in present for t in targets for name in free_proxies)
        masks = frozenset((m, s) for m, s in zip(runs["method"], runs["setting"])
                          if any((t, MASK_PROXY, m, s) not in present for t in targets))
        if free or masks:
            out[(entry, int(seed))] = Needs(free, masks)
    return out


def proxy_rows(settings: ValidationSettings, model: str, wanted: dict, on_event=None) -> list[dict]:
    """The proxies `wanted` ((entry, seed) -> Needs) lacks for `model`: one row per (entry, seed, target, proxy,
    method, setting), method and setting empty for the proxies that do not depend on them, with its
    `proxy_revision`, the seconds the entry took (`seconds`: making its windows again and its proxies), of those
    the seconds its windows took (`selection_seconds`: a set a user advises on is made once either way), what the
    row's proxy alone cost for this candidate in one case (`proxy_seconds`: the forward it needs, its masks for
    this setting, its own arithmetic), what it needs of the target once per case (`target_seconds`: its norms,
    masks or n-grams) and the CPU they were timed on. Each candidate is scored once for every target; the
    targets' masks are computed once per setting. SparseGPT's masks need each set's Hessians: they come from a
    forward of their own, so that the other proxies are timed without that cost."""
    from ..data.sources import build_calibration
    from ..data.strategies import build_strategy_calibration
    from ..metrics.proxies import dense_channel_norms, needs_hessians, norm_divergence, packed_jaccard, packed_masks
    from ..metrics.similarity import build_reference, js_divergence, ngram_overlap, similarity_table, words
    from ..models import load_model
    from ..prune import PruneConfig
    from ..provenance import cpu_kind
    from .advisor import _windows, proxy_revision

    emit = on_event or (lambda message: None)
    points = candidate_points(settings, model)
    todo = {key: (points[key], needs) for key, needs in wanted.items() if key in points}
    if not todo:
        return []
    tour = settings.tournament
    loaded = load_model(model, dtype=tour.resolved_dtype())
    model_, tokenizer = loaded.model, loaded.tokenizer
    configs = [PruneConfig(method=m, **({"pattern": s} if isinstance(s, str) else {"sparsity": float(s)})).resolved()
               for m in tour.methods for s in tour.settings]
    cases = set().union(*(needs.masks for _, needs in todo.values()))
    configs = [c for c in configs if _name(c) in cases]
    free = any(needs.free for _, needs in todo.values())

    def statistics(windows, chosen_configs, plain: bool):
        """Per forward kind (plain norms, made when `plain` or a config needs them; with Hessians, when a config
        does): (norms, seconds, {config's name: (packed masks, their seconds)})."""
        out = {}
        for hessians in (False, True):
            these = [c for c in chosen_configs if needs_hessians(c) == hessians]
            if not these and (hessians or not plain):
                continue
            norms, seconds = _timed(lambda: dense_channel_norms(model_, windows.input_ids, windows.unpadded_lengths,
                                                                hessians=hessians))
            masks = {}  # per config's name: (its packed masks, their seconds)
            for config in these:
                masks[_name(config)] = _timed(lambda: packed_masks(model_, norms, config))
            norms.release()  # with Hessians, [in, in] per module: the masks are made
            out[hessians] = (norms, seconds, masks)
        return out

    targets, target_seconds = {}, {}
    for target in settings.targets:
        emit(f"target {target}")
        text = settings.target_text(target)
        windows = build_calibration(text, tokenizer, settings.target_windows, tour.seqlen, TARGET_SEED_OFFSET,
                                    tour.mode)
        made = statistics(windows, configs, free)
        reference, reference_seconds = _timed(lambda: build_reference(text)) if free else (None, 0.0)
        targets[target] = (made, reference)
        # what each proxy needs of the target, once per case: its norms, its masks for one setting, its n-grams
        seconds = {"ngram_overlap": reference_seconds, "js_divergence": reference_seconds}
        if False in made:
            seconds["norm_divergence"] = made[False][1]
        for hessians, (_, forward, masks) in made.items():
            seconds.update({_name(c): forward + masks[_name(c)][1] for c in configs if needs_hessians(c) == hessians})
        target_seconds[target] = seconds
    cpu = cpu_kind()
    rows = []
    for number, ((entry, seed), (point, needs)) in enumerate(todo.items(), 1):
        emit(f"proxies {number}/{len(todo)}: {model} {entry} seed {seed}")
        started = time.perf_counter()
        chosen = build_strategy_calibration(point.calibration, tokenizer, point.nsamples, tour.seqlen, seed, tour.mode,
                                            point.strategy, dict(point.strategy_options), model=model_)
        selected = time.perf_counter()
        own_configs = [c for c in configs if _name(c) in needs.masks]
        made = statistics(chosen, own_configs, needs.free)
        base = {"model": model, "entry": entry, "seed": seed}
        entry_rows = []
        if needs.free:
            (scores, _), forward_seconds = _timed(lambda: similarity_table(
                model_, tokenizer, {entry: _windows(chosen)}, None, max_tokens=tour.seqlen, window=tour.seqlen))
            texts = list(scores["text"])
            norms, norms_seconds, _ = made[False]
        for target, (target_made, reference) in targets.items():
            if needs.free:
                # value and seconds per proxy: its own arithmetic plus the forward it needs (Min-K%++ and the
                # calibration perplexity share one; the norm divergence has the hooked one)
                target_norms = target_made[False][0]
                timed = {"norm_divergence": _timed(lambda: norm_divergence(norms, target_norms), norms_seconds),
                         "ngram_overlap": _timed(lambda: float(np.mean([ngram_overlap(t, reference) for t in texts]))),
                         "js_divergence": _timed(lambda: float(np.mean([
                             js_divergence(Counter(words(t)), reference.unigrams) for t in texts]))),
                         "min_k_pp": (float(scores["min_k_pp"].mean()), forward_seconds),
                         "calib_ppl": (float(scores["ppl"].mean()), forward_seconds)}
                entry_rows += [{**base, "target": target, "proxy": name, "method": "", "setting": "", "value": value,
                                "proxy_seconds": seconds, "proxy_revision": 0,
                                "target_seconds": target_seconds[target].get(name, 0.0)}
                               for name, (value, seconds) in timed.items()]
            for config in own_configs:
                _, forward, masks = made[needs_hessians(config)]
                own, own_seconds = masks[_name(config)]
                theirs = target_made[needs_hessians(config)][2][_name(config)][0]
                value, seconds = _timed(lambda: packed_jaccard(own, theirs), forward + own_seconds)
                entry_rows.append({**base, "target": target, "proxy": MASK_PROXY, "method": config.method,
                                   "setting": setting_label(config.as_dict()), "value": value, "proxy_seconds": seconds,
                                   "proxy_revision": proxy_revision(config.method, MASK_PROXY),
                                   "target_seconds": target_seconds[target][_name(config)]})
        seconds = time.perf_counter() - started
        rows += [{**row, "seconds": seconds, "selection_seconds": selected - started, "cpu": cpu} for row in entry_rows]
    return rows


def _name(config) -> tuple[str, str]:
    return config.method, setting_label(config.as_dict())


def _timed(compute, plus: float = 0.0):
    """(compute(), its seconds + `plus`): a proxy's value and what it cost."""
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started + plus


def _goodness(values: pd.Series, higher_is_better: bool) -> pd.Series:
    return values if higher_is_better else -values


def seed_reliability(measured: pd.DataFrame) -> tuple[float, float]:
    """How well the measured ranking of the entries (rows) repeats from seed to seed (columns): the mean
    Spearman between every two seeds' rankings (r1), and the seed-noise reference that implies: the Spearman a
    predictor of the many-seed ranking is expected to reach against the ranking by the mean over these k seeds,
    sqrt(k r1 / (1 + (k - 1) r1)) (the Spearman-Brown reliability of a k-seed mean, then the index of
    reliability; an approximation for ranks, and an expectation, not a bound: a proxy can exceed it by chance).
    It is 0 where seeds rank the entries no more alike than chance; both are NaN with one seed."""
    import warnings

    from scipy import stats

    columns = list(measured.columns)
    rhos = []
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            pair = measured[[a, b]].dropna()
            if len(pair) >= 3:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", stats.ConstantInputWarning)
                    rhos.append(stats.spearmanr(pair[a], pair[b]).statistic)
    rhos = [r for r in rhos if r == r]
    if not rhos:
        return float("nan"), float("nan")
    r1, k = float(np.mean(rhos)), len(columns)
    reliability = k * r1 / (1 + (k - 1) * r1) if r1 > 0 else 0.0
    return r1, float(np.sqrt(reliability))


def scopes(settings: ValidationSettings, model: str) -> dict[str, set[str]]:
    """The candidate sets each agreement is measured over: every candidate; the windows chosen or made by each
    strategy with the tournament's source (the choice a user makes once the source is fixed: random, least-ppl,
    unique-tokens, activation-kmeans, self-calibration, icl-format on wiki); and random draws from each source
    and the mix (the choice of domain)."""
    from ..data.strategies import RANDOM

    entries = {entry: point for (entry, _), point in candidate_points(settings, model).items()}
    return {ALL: set(entries),
            ONE_SOURCE: {e for e, p in entries.items() if p.calibration == settings.tournament.source},
            ACROSS_SOURCES: {e for e, p in entries.items() if p.strategy == RANDOM}}


def agreement(proxies: pd.DataFrame, measured: pd.DataFrame, settings: ValidationSettings, seed: int = 0) -> pd.DataFrame:
    """Spearman's rho and Kendall's tau between each proxy's ranking of the entries (its mean over seeds, in
    its direction) and the measured ranking (the capability's mean over seeds), per model, method, setting,
    target, proxy and scope (scopes), with two 95% bootstrap intervals: the protocol's (`spearman_low`/`high`:
    resampling the seeds, the same for both rankings) and one that resamples the candidates too
    (`spearman_low_both`/`high_both`: a ranking of other sets like these would agree that well), how well the
    measured ranking repeats across seeds (`seed_agreement`) and the seed-noise reference it implies
    (`noise_ceiling`, seed_reliability), and the proxy's revision (`proxy_revision`)."""
    import warnings

    from scipy import stats

    from .advisor import current_rows, proxy_revision

    proxies = current_rows(proxies)
    rng = np.random.default_rng(seed)
    rows = []
    for (model, method, setting), cell in measured.groupby(["model", "method", "setting"], sort=False):
        scoped = scopes(settings, model)
        for target in settings.targets:
            capability = settings.capability(target)
            if capability not in cell:
                continue
            truth_all = cell.pivot_table(index="entry", columns="seed", values=capability)
            for name, proxy in PROXIES.items():
                chosen = proxies[(proxies["model"] == model) & (proxies["target"] == target) & (proxies["proxy"] == name)]
                if name == MASK_PROXY:
                    chosen = chosen[(chosen["method"] == method) & (chosen["setting"] == setting)]
                predicted = chosen.pivot_table(index="entry", columns="seed", values="value")
                for scope, members in scoped.items():
                    entries = sorted(set(truth_all.index) & set(predicted.index) & members)
                    seeds = sorted(set(truth_all.columns) & set(predicted.columns))
                    if len(entries) < 3 or not seeds:
                        continue
                    t, p = truth_all.loc[entries, seeds], predicted.loc[entries, seeds]
                    measured_good = _goodness(t, capability == CLOZE).to_numpy()
                    predicted_good = _goodness(p, proxy.higher_is_better).to_numpy()
                    with warnings.catch_warnings():  # tied means: rho is nan, kept so
                        warnings.simplefilter("ignore", stats.ConstantInputWarning)
                        warnings.simplefilter("ignore", RuntimeWarning)  # a candidate with no run of any seed
                        rho = stats.spearmanr(np.nanmean(predicted_good, axis=1), np.nanmean(measured_good, axis=1)).statistic
                        tau = stats.kendalltau(np.nanmean(predicted_good, axis=1), np.nanmean(measured_good, axis=1)).statistic
                    repeat, ceiling = seed_reliability(t)
                    n, k, draws = len(entries), len(seeds), settings.bootstrap
                    by_seed = _resampled_spearman(predicted_good, measured_good, rng.integers(0, k, (draws, k)),
                                                  np.tile(np.arange(n), (draws, 1)))
                    both = _resampled_spearman(predicted_good, measured_good, rng.integers(0, k, (draws, k)),
                                               rng.integers(0, n, (draws, n)))
                    rows.append({"model": model, "method": method, "setting": setting, "target": target,
                                 "proxy": name, "scope": scope, "spearman": rho, "kendall": tau,
                                 "spearman_low": _percentile(by_seed, 2.5), "spearman_high": _percentile(by_seed, 97.5),
                                 "spearman_low_both": _percentile(both, 2.5),
                                 "spearman_high_both": _percentile(both, 97.5),
                                 "seed_agreement": repeat, "noise_ceiling": ceiling,
                                 "candidates": len(entries), "seeds": len(seeds),
                                 "proxy_revision": proxy_revision(method, name)})
    return pd.DataFrame(rows)


def _resampled_spearman(predicted: np.ndarray, measured: np.ndarray, seeds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spearman's rho per resample b between the two [candidates, seeds] tables' means over the seeds `seeds[b]`,
    of the candidates `rows[b]` (a candidate drawn twice counts twice, tied). NaN where either side is constant
    (one seed drawn for tied values, or fewer than two distinct candidates) and where fewer than three distinct
    candidates were drawn (they rank nothing)."""
    import warnings

    from scipy.stats import rankdata

    def means(table):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a candidate whose drawn seeds have no run
            per_draw = np.nanmean(table[:, seeds], axis=2).T  # [draws, candidates]
        return np.take_along_axis(per_draw, rows, axis=1)

    a, b = rankdata(means(predicted), axis=1), rankdata(means(measured), axis=1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    distinct = np.array([len(np.unique(r)) for r in rows])
    return np.where(distinct >= 3, rho, np.nan)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.nanpercentile(values, q)) if np.isfinite(values).any() else float("nan")


def verdicts(found: pd.DataFrame) -> pd.DataFrame:
    """verdict_of per method, setting, target and proxy, over the models."""
    found = protocol_rows(found)
    if found.empty:
        return pd.DataFrame(columns=["method", "setting", "target", "proxy", "mean_spearman", "models", "cost_share",
                                     "verdict"])
    rows = []
    for (method, setting, target, proxy), group in found.groupby(["method", "setting", "target", "proxy"], sort=False):
        rows.append({"method": method, "setting": setting, "target": target, "proxy": proxy,
                     "mean_spearman": float(group["spearman"].mean()), "models": len(group),
                     "cost_share": float(pd.to_numeric(group["cost_share"], errors="coerce").max()),
                     "verdict": verdict_of(group)})
    return pd.DataFrame(rows)


def read_rows(path: Path) -> pd.DataFrame:
    """The proxies computed so far (method and setting stay empty text where a proxy has none)."""
    return pd.read_csv(path, keep_default_na=False) if path.exists() else pd.DataFrame()


PER_PROXY, OTHER_MACHINES, ALL_AT_ONCE, WITH_SELECTION, NO_RUN_TIMES = (
    "per proxy, proxies and runs timed on one machine", "per proxy, runs timed on other machines",
    "every proxy at once (an upper bound)", "every proxy at once, with making the windows (not timed apart)",
    "no run times")


def cost_shares(proxies: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Per model, method and proxy: ranking N candidates by the proxy against pruning with the method and
    evaluating each candidate once (the protocol's brute force), as a share: N candidates' `proxy_seconds`
    (the mask proxy's for that method) plus its `target_seconds` once, over N median seconds of the method's
    runs (pruning, evaluation, and the selection in the first run of a seed). The runs are those timed on the CPU the
    proxies were, where any were. `basis` says how it was measured: rows computed before `proxy_seconds` was
    recorded give every proxy the seconds of all of a candidate's proxies (an upper bound), with its windows'
    making where `selection_seconds` was not recorded either. NaN share when no run of the model has a
    recorded time (rows carried from a CSV written before `run_seconds` was exported)."""
    from .advisor import PROXIES

    rows = []
    for model in proxies["model"].unique():
        mine = proxies[proxies["model"] == model]
        runs = measured[measured["model"] == model]
        timed = mine[pd.to_numeric(mine["proxy_seconds"], errors="coerce").notna()] if "proxy_seconds" in mine else mine.iloc[0:0]
        cpu = timed["cpu"].mode().iloc[0] if len(timed) and "cpu" in timed else None
        if timed.empty:  # rows from before per-proxy times: one candidate's proxies, all at once
            per_candidate = mine.groupby(["entry", "seed"])
            spent = per_candidate["seconds"].first()
            selection = pd.to_numeric(per_candidate["selection_seconds"].first(), errors="coerce") \
                if "selection_seconds" in mine.columns else spent * float("nan")
            all_at_once = float((spent - selection.fillna(0.0)).mean())
            old_basis = WITH_SELECTION if selection.isna().any() else ALL_AT_ONCE
        for method in runs["method"].unique():
            method_runs = runs[runs["method"] == method]
            same = method_runs[method_runs["cpu"] == cpu] if cpu is not None and "cpu" in method_runs else method_runs.iloc[0:0]
            chosen, basis = (method_runs, old_basis) if timed.empty else \
                (same, PER_PROXY) if len(same) else (method_runs, OTHER_MACHINES)
            totals = pd.to_numeric(chosen.get("run_seconds", pd.Series(dtype=float)), errors="coerce").dropna()
            median = float(totals.median()) if len(totals) else float("nan")
            for name in PROXIES:
                if timed.empty:
                    seconds = all_at_once
                else:
                    own = timed[(timed["proxy"] == name) & ((timed["method"] == method) if name == MASK_PROXY else True)]
                    seconds = float(pd.to_numeric(own["proxy_seconds"]).mean()
                                    + pd.to_numeric(own["target_seconds"]).mean() / mine["entry"].nunique())
                rows.append({"model": model, "method": method, "proxy": name, "seconds": seconds,
                             "run_seconds": median, "share": seconds / median,
                             "basis": basis if len(totals) else NO_RUN_TIMES})
    return pd.DataFrame(rows, columns=["model", "method", "proxy", "seconds", "run_seconds", "share", "basis"])


def frozen_runs(settings: ValidationSettings, path: Path) -> pd.DataFrame:
    """The runs of `path` (a CSV validate wrote) that fall in the validation's grid: its models, methods,
    settings, entries and seeds, whichever revision of a strategy made them (matched by name, not point key:
    the validation as measured, read back)."""
    from ..prune import PruneConfig

    frame = pd.read_csv(path)
    tour = settings.tournament
    settings_ = {setting_label(PruneConfig(**({"pattern": s} if isinstance(s, str) else {"sparsity": float(s)}))
                               .resolved().as_dict()) for s in tour.settings}
    entries = {entry for model in tour.models for entry, _ in candidate_points(settings, model)}
    return frame[frame["model"].isin(tour.models) & frame["method"].isin(tour.methods)
                 & frame["setting"].isin(settings_) & frame["entry"].isin(entries)
                 & frame["seed"].isin(range(tour.seeds))].reset_index(drop=True)


def validate(settings: ValidationSettings, store, proxies_csv: Path, table_csv: Path, run_missing: bool = True,
             on_event=None, runs_csv: Path | None = None, on_run_event=None,
             frozen: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The measured runs, the proxies they lack in `proxies_csv` (appended after each model; rows of an earlier
    proxy revision replaced), the agreement table written to `table_csv`; returns it with the verdicts and the
    cost shares (cost_shares; each case's row carries its proxy's). `on_run_event` receives the runs'
    pipeline events, `on_event` the proxies' messages.
    With `run_missing`, the runs are the tournament's points (missing ones run) and `runs_csv` receives every
    one, also when the runs are interrupted (Ctrl-C): the validation outlasts one machine's run store only as
    that CSV, read back as `previous`. Without it, and with `frozen` (a CSV of runs), the runs are those of
    `frozen` as they are (frozen_runs, also written to `runs_csv`), and proxies are made only for entries whose strategy still makes the windows those runs were measured on (the same
    point key); any other is left out of the new proxies, with a message."""
    from .advisor import current_rows
    from .tournament import run_tournament, tournament_frame

    emit = on_event or (lambda message: None)
    try:
        if run_missing:
            run_tournament(settings.tournament, store, on_run_event)
    finally:
        measured = frozen_runs(settings, frozen) if frozen is not None and not run_missing else \
            tournament_frame(settings.tournament, store)
        if runs_csv is not None and not measured.empty:
            runs_csv.parent.mkdir(parents=True, exist_ok=True)
            measured.to_csv(runs_csv, index=False)
    proxies = read_rows(proxies_csv)
    proxies = current_rows(proxies) if not proxies.empty else proxies
    for model in settings.tournament.models:
        here = measured[measured["model"] == model]
        keys = {p.key for p in settings.tournament.points(model)}
        same = here[here["point_key"].isin(keys)] if "point_key" in here else here
        lacking = missing_proxies(proxies, model, here, settings)
        for entry in sorted({entry for entry, _ in lacking} - set(same["entry"])):
            emit(f"{model} {entry}: measured by an earlier version of its strategy, whose windows this code cannot "
                 f"make again: its missing proxies are left out")
        wanted = {key: needs for key, needs in lacking.items() if key[0] in set(same["entry"])}
        rows = proxy_rows(settings, model, wanted, on_event)
        if rows:
            proxies = pd.concat([proxies, pd.DataFrame(rows)], ignore_index=True)
            # rows written before revisions were recorded are of revision 0
            proxies["proxy_revision"] = pd.to_numeric(proxies["proxy_revision"], errors="coerce").fillna(0).astype(int)
            proxies.to_csv(proxies_csv, index=False)
    costs = cost_shares(proxies, measured)
    found = agreement(proxies, measured, settings)
    if not found.empty:  # each case carries its proxy's cost share, so advise can apply the verdict rule
        found = found.merge(costs[["model", "method", "proxy", "share"]].rename(columns={"share": "cost_share"}),
                            on=["model", "method", "proxy"], how="left")
    table_csv.parent.mkdir(parents=True, exist_ok=True)
    found.to_csv(table_csv, index=False)
    found.attrs["measured"] = len(measured)
    return found, verdicts(found), costs


RESULTS_HEADING = "## Results"


def write_results(report: Path, found: pd.DataFrame, verdicts_: pd.DataFrame, costs: pd.DataFrame,
                  settings: ValidationSettings, measured_points: int, command: str,
                  proxies: pd.DataFrame | None = None) -> Path:
    """Replace the Results section of the protocol file `report` (everything above it stays as fixed); with
    `proxies` (the proxies' rows), also how the SparseGPT mask proxy relates to the Wanda one."""
    text = report.read_text(encoding="utf-8")
    head = text[: text.index(RESULTS_HEADING)] if RESULTS_HEADING in text else text + "\n"
    planned = sum(len(settings.tournament.points(m)) for m in settings.tournament.models)
    lines = [RESULTS_HEADING, "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}` from {measured_points} of "
             f"the protocol's {planned} measured points"
             + (" (every one)." if measured_points >= planned else
                " (the others not run yet: cases they would complete are missing below, and a case needs 3 or more "
                "candidates).")
             + " Per-case table: "
             f"`calib_core/data/advisor_validation.csv` (what `advise` looks up); the proxies per candidate and seed: "
             f"`docs/results/advisor-proxies.csv`.", ""]
    if found.empty:
        report.write_text(head + "\n".join(lines + ["No case has enough candidates yet.", ""]) + "\n", encoding="utf-8")
        return report
    scoped, found = found, protocol_rows(found)
    summary = (found.groupby(["target", "proxy"], sort=False)
               .agg(mean=("spearman", "mean"), low=("spearman", "min"), high=("spearman", "max"),
                    ceiling=("noise_ceiling", "mean"), cases=("spearman", "count")).reset_index())
    lines += ["Mean Spearman per target and proxy over every (model, method, setting) case measured, with the "
              "lowest and highest case, and the mean seed-noise reference of those cases (what a predictor that "
              "knew the ranking many seeds would give could expect against these 3 seeds' ranking; see below):", "",
              summary.rename(columns={"ceiling": "seed-noise ref."}).to_markdown(index=False, floatfmt=".2f"), ""]
    lines += _scope_lines(scoped) + _interval_lines(found) + _ceiling_lines(found, summary)
    lines += _sparsegpt_lines(proxies) if proxies is not None else []
    lines += _cost_lines(costs)
    counts = verdicts_["verdict"].value_counts().to_dict()
    models = found["model"].nunique()
    best = summary.sort_values("mean", ascending=False).head(3)
    met = verdicts_[verdicts_["verdict"] == "predicts"]
    targets = verdicts_["target"].nunique()
    everywhere = [(method, setting, proxy) for (method, setting, proxy), group
                  in met.groupby(["method", "setting", "proxy"], sort=False) if group["target"].nunique() == targets]
    lines += ["Verdicts per (method, setting, target, proxy) under the protocol's rules: "
              + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
              ("The goal (one proxy that predicts every target, mean Spearman >= 0.8 at <= 10% of the brute-force "
               "cost) is " + ("**met** for: " + "; ".join(f"{p} ({m} {s})" for m, s, p in everywhere) if everywhere
                              else "**not met**: no proxy predicts every target for any method and setting") + "."),
              "", ("It is met for single targets in: "
                   + "; ".join(f"{r.proxy} on {r.target} ({r.method} {r.setting}"
                               + ("" if r.models == models else f"; {r.models} of {models} models measured") + ")"
                               for r in met.itertuples()) + "."
                   if not met.empty else "No (method, setting, target) cell has a proxy that predicts."),
              "", "Highest mean agreement: " + "; ".join(f"{r.proxy} on {r.target} {r['mean']:.2f}"
                                                        for _, r in best.iterrows()) + ".", ""]
    report.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    return report


def _scope_lines(scoped: pd.DataFrame) -> list[str]:
    """Mean Spearman per target and proxy over all candidates, one source's strategies and across sources."""
    if "scope" not in scoped or scoped["scope"].nunique() < 2:
        return []
    table = scoped.pivot_table(index=["target", "proxy"], columns="scope", values="spearman", aggfunc="mean",
                               sort=False)
    table = table[[c for c in (ALL, ONE_SOURCE, ACROSS_SOURCES) if c in table]].reset_index()
    counts = scoped.groupby("scope")["candidates"].max()
    means = scoped.groupby(["scope", "proxy"])["spearman"].mean().unstack(0)
    telling = [p for p in means.index if ACROSS_SOURCES in means and ONE_SOURCE in means
               and means.loc[p, ACROSS_SOURCES] >= RANKS > means.loc[p, ONE_SOURCE]]
    return ["Which choice a proxy can inform (an analysis added after the protocol; it changes no verdict). The "
            "same agreement over three candidate sets: all candidates (" + f"{counts.get(ALL, 0)}), "
            f"the strategies on one source (the tournament's entries on wiki: {counts.get(ONE_SOURCE, 0)}; the "
            f"choice left once the source is fixed) and random draws across sources (wiki, news, books, code and "
            f"the mix: {counts.get(ACROSS_SOURCES, 0)}; the choice of domain). Mean Spearman per target and proxy "
            "over the (model, method, setting) cases:", "",
            table.to_markdown(index=False, floatfmt=".2f"), "",
            ("Proxies that rank domains (mean Spearman >= 0.5 across sources) but not one source's sets (below 0.5): "
             + ", ".join(f"{p} ({means.loc[p, ACROSS_SOURCES]:.2f} vs {means.loc[p, ONE_SOURCE]:.2f})" for p in telling)
             + ". For them `advise` says so, and recommends pruning the top few (`--verify K`) for a choice within "
               "a source." if telling else "No proxy ranks domains without ranking one source's sets too."), ""]


def _interval_lines(found: pd.DataFrame) -> list[str]:
    """How wide the agreement's intervals are when the candidates are resampled too."""
    if "spearman_low_both" not in found:
        return []
    width_seeds = (found["spearman_high"] - found["spearman_low"]).median()
    width_both = (found["spearman_high_both"] - found["spearman_low_both"]).median()
    above = int((found["spearman_low"] > 0.5).sum())
    above_both = int((found["spearman_low_both"] > 0.5).sum())
    at_top = int((found["spearman"] >= found["spearman_high"] - 1e-9).sum())
    k = int(found["seeds"].max())
    return ["Intervals (an analysis added after the protocol; verdicts use the protocol's). The protocol's 95% "
            f"interval resamples the {k} seeds, which have {math.comb(2 * k - 1, k)} distinct resamples: its median "
            "width is "
            f"{width_seeds:.2f}, and in {at_top} of {len(found)} cases the point estimate is its upper end. An "
            "interval that resamples the candidates as well (a ranking of other sets like these; Spearman over a "
            f"resample with repeated candidates, ties averaged) has a median width of {width_both:.2f}. The lower "
            f"end is above 0.5 in {above} cases by the protocol's interval and in {above_both} by the wider one.", ""]


def _sparsegpt_lines(proxies: pd.DataFrame) -> list[str]:
    """Whether the SparseGPT mask proxy tells candidates apart otherwise than the Wanda one: the Spearman of their
    values over the candidates, per (model, setting, target, seed)."""
    from scipy import stats

    from .advisor import current_rows

    masks = current_rows(proxies)
    masks = masks[masks["proxy"] == MASK_PROXY]
    pairs = masks.pivot_table(index=["model", "setting", "target", "seed", "entry"], columns="method", values="value")
    if not {"sparsegpt", "wanda"} <= set(pairs.columns):
        return []
    rhos = [stats.spearmanr(g["sparsegpt"], g["wanda"]).statistic
            for _, g in pairs.dropna(subset=["sparsegpt", "wanda"]).groupby(level=[0, 1, 2, 3]) if len(g) >= 3]
    return ["SparseGPT's mask proxy (revision 1: SparseGPT's own block-wise selection with its weight updates on "
            "each set's Hessian; revision 0, a per-row static score, had rank correlation 0.9999 with the Wanda "
            f"proxy): over the candidates of each (model, setting, target, seed), its values' Spearman with the "
            f"Wanda proxy's has median {np.median(rhos):.2f} (range {min(rhos):.2f} to {max(rhos):.2f}, "
            f"{len(rhos)} rankings).", ""]


def _ceiling_lines(found: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """How well the measured rankings repeat across seeds, where that alone rules the goal out, and how close
    each target's best proxy comes to its ceiling."""
    cases = found.drop_duplicates(["model", "method", "setting", "target"])
    per_target = cases.groupby("target", sort=False).agg(seed_agreement=("seed_agreement", "mean"),
                                                         ceiling=("noise_ceiling", "mean"),
                                                         below=("noise_ceiling", lambda c: int((c < 0.8).sum())),
                                                         cases=("noise_ceiling", "count")).reset_index()
    below = int((cases["noise_ceiling"] < 0.8).sum())
    over = int((found["spearman"] > found["noise_ceiling"]).sum())
    return ["Seed-noise reference (an analysis added to the fixed protocol, earlier called a noise ceiling; it "
            "changes no verdict). Per case, the mean Spearman between two seeds' measured rankings (seed "
            "agreement, r1), and sqrt(k r1 / (1 + (k - 1) r1)) for k seeds (Spearman-Brown, then the index of "
            "reliability): the Spearman a predictor that knew the ranking by many seeds would be expected to "
            "reach against the ranking by these k seeds' mean. It is an expectation under an approximation for "
            f"ranks, not a bound: a proxy can exceed it by chance, as {over} of {len(found)} (case, proxy) rows "
            "here do.", "",
            per_target.rename(columns={"below": "cases below 0.8", "ceiling": "seed-noise ref."})
            .to_markdown(index=False, floatfmt=".2f"), "",
            f"In {below} of {len(cases)} cases the measured ranking repeats so little from seed to seed that not even "
            f"a perfect predictor would be expected to reach a Spearman of 0.8 against it (there the candidates "
            f"prune alike within seed noise).",
            "", "Each target's best proxy (mean Spearman) against the mean seed-noise reference of its cases: "
            + "; ".join(f"{r.target}: {r.proxy} {r.mean:.2f} of {r.ceiling:.2f}"
                        for r in summary.sort_values("mean", ascending=False).drop_duplicates("target").itertuples())
            + ".", ""]


def _cost_lines(costs: pd.DataFrame) -> list[str]:
    """Each proxy's cost share per model and method, and how it was measured."""
    if costs.empty:
        return []
    labelled = costs.assign(case=costs["model"] + " " + costs["method"])
    table = labelled.pivot_table(index="proxy", columns="case", values="share", sort=False)
    one_basis = costs["basis"].nunique() == 1  # then said once, not after every method
    runs = [f"{model}: " + ", ".join(
        f"{r.method} {r.run_seconds:.0f} s" + ("" if one_basis else f" ({r.basis})")
        for r in group.drop_duplicates("method").itertuples())
        for model, group in costs.groupby("model", sort=False)]
    how = f"Cost basis: {costs['basis'].iloc[0]}. Median runs" if one_basis else "Median runs, with each method's cost basis"
    return ["Cost of ranking the candidates by each proxy, as a share of pruning with the method and evaluating "
            "every candidate once (the brute-force answer): per candidate, the forward the proxy needs, its masks "
            "for the setting and its own arithmetic, plus the target's once for the proxies that need one, over "
            "the method's median run:",
            "", table.to_markdown(floatfmt=".1%"), "",
            how + ": " + "; ".join(runs) + ".", ""]
