"""The advisor's validation (docs/results/advisor.md): how well each proxy's ranking of candidate calibration
sets agrees with the ranking that pruning with each of them measured, per model, method, setting and
target, with bootstrap intervals over seeds, and at what cost against pruning with every candidate.

The measured side is the strategy tournament's runs (a TournamentSettings with the validation's candidates,
methods and seeds: its points are the tournament's where they match, so those runs are reused). The
predicted side recomputes each candidate's windows exactly as its runs drew them (same source, strategy,
seed, nsamples x seqlen, sampling mode) and the proxies of advisor.py on them; each (model, entry, seed)
is computed once and kept in a CSV, so the validation resumes."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.sources import BUILTIN_SOURCES
from ..experiments.stats import setting_label
from .advisor import ACROSS_SOURCES, ALL, MASK_PROXY, ONE_SOURCE, PROXIES, TARGET_SEED_OFFSET, protocol_rows, verdict_of
from .tournament import CLOZE, ROUND_ONE, UNIFORM_MIX, TournamentSettings, entry_of
from .validation_measures import cost_shares, goodness, percentile, resampled_spearman, seed_reliability

CLOZE_TARGET = "cloze"
CLOZE_TEXT = UNIFORM_MIX  # the cloze items come from the four builtin domains: their mix stands for them


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
    from ..provenance import cpu_kind
    from ..prune import PruneConfig
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
                    measured_good = goodness(t, capability == CLOZE).to_numpy()
                    predicted_good = goodness(p, proxy.higher_is_better).to_numpy()
                    with warnings.catch_warnings():  # tied means: rho is nan, kept so
                        warnings.simplefilter("ignore", stats.ConstantInputWarning)
                        warnings.simplefilter("ignore", RuntimeWarning)  # a candidate with no run of any seed
                        rho = stats.spearmanr(np.nanmean(predicted_good, axis=1), np.nanmean(measured_good, axis=1)).statistic
                        tau = stats.kendalltau(np.nanmean(predicted_good, axis=1), np.nanmean(measured_good, axis=1)).statistic
                    repeat, ceiling = seed_reliability(t)
                    n, k, draws = len(entries), len(seeds), settings.bootstrap
                    by_seed = resampled_spearman(predicted_good, measured_good, rng.integers(0, k, (draws, k)),
                                                  np.tile(np.arange(n), (draws, 1)))
                    both = resampled_spearman(predicted_good, measured_good, rng.integers(0, k, (draws, k)),
                                               rng.integers(0, n, (draws, n)))
                    rows.append({"model": model, "method": method, "setting": setting, "target": target,
                                 "proxy": name, "scope": scope, "spearman": rho, "kendall": tau,
                                 "spearman_low": percentile(by_seed, 2.5), "spearman_high": percentile(by_seed, 97.5),
                                 "spearman_low_both": percentile(both, 2.5),
                                 "spearman_high_both": percentile(both, 97.5),
                                 "seed_agreement": repeat, "noise_ceiling": ceiling,
                                 "candidates": len(entries), "seeds": len(seeds),
                                 "proxy_revision": proxy_revision(method, name)})
    return pd.DataFrame(rows)


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


def measured_runs(settings: ValidationSettings, store, frozen: Path | None = None) -> pd.DataFrame:
    """The runs the validation compares with: the tournament's points in `store` (and its `previous` CSV), or
    with `frozen`, the runs of that CSV as they were measured (frozen_runs)."""
    from .tournament import tournament_frame

    return frozen_runs(settings, frozen) if frozen is not None else tournament_frame(settings.tournament, store)


def measure(settings: ValidationSettings, store, proxies_csv: Path, run_missing: bool = True, on_event=None,
            runs_csv: Path | None = None, on_run_event=None, frozen: Path | None = None):
    """The measured runs and the proxies they lack in `proxies_csv` (appended after each model; rows of an
    earlier proxy revision replaced); the runs' SweepSummary (nothing ran without `run_missing`).
    `on_run_event` receives the runs' pipeline events, `on_event` the proxies' messages.
    With `run_missing`, the runs are the tournament's points (missing ones run) and `runs_csv` receives every
    one, also when the runs are interrupted (Ctrl-C): the validation outlasts one machine's run store only as
    that CSV, read back as `previous`. Without it, and with `frozen` (a CSV of runs), the runs are those of
    `frozen` as they are (also written to `runs_csv`), and proxies are made only for entries whose strategy
    still makes the windows those runs were measured on (the same point key); any other is left out of the
    new proxies, with a message."""
    from ..experiments.sweeps import SweepSummary
    from .advisor import current_rows
    from .tournament import run_tournament

    emit = on_event or (lambda message: None)
    summary = SweepSummary()
    try:
        if run_missing:
            summary = run_tournament(settings.tournament, store, on_run_event)
    finally:
        measured = measured_runs(settings, store, None if run_missing else frozen)
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
    return summary


def assess(settings: ValidationSettings, measured: pd.DataFrame, proxies_csv: Path,
           table_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The agreement table of the proxies in `proxies_csv` with the `measured` runs, written to `table_csv`;
    returns it with the verdicts and the cost shares (cost_shares; each case's row carries its proxy's)."""
    from .advisor import current_rows

    proxies = read_rows(proxies_csv)
    proxies = current_rows(proxies) if not proxies.empty else proxies
    costs = cost_shares(proxies, measured)
    found = agreement(proxies, measured, settings)
    if not found.empty:  # each case carries its proxy's cost share, so advise can apply the verdict rule
        found = found.merge(costs[["model", "method", "proxy", "share"]].rename(columns={"share": "cost_share"}),
                            on=["model", "method", "proxy"], how="left")
    table_csv.parent.mkdir(parents=True, exist_ok=True)
    found.to_csv(table_csv, index=False)
    found.attrs["measured"] = len(measured)
    return found, verdicts(found), costs


def validate(settings: ValidationSettings, store, proxies_csv: Path, table_csv: Path, run_missing: bool = True,
             on_event=None, runs_csv: Path | None = None, on_run_event=None,
             frozen: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """measure, then assess what was measured."""
    measure(settings, store, proxies_csv, run_missing, on_event, runs_csv, on_run_event, frozen)
    measured = measured_runs(settings, store, None if run_missing else frozen)
    return assess(settings, measured, proxies_csv, table_csv)


