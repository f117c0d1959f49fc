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
from .advisor import PROXIES, TARGET_SEED_OFFSET, verdict_of
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


def proxy_rows(settings: ValidationSettings, model: str, wanted: set, on_event=None) -> list[dict]:
    """The proxies of the (entry, seed) pairs in `wanted` for `model`: one row per (entry, seed, target, proxy,
    method, setting), method and setting empty for the proxies that do not depend on them, with the seconds
    the entry took (`seconds`: making its windows again and its proxies), of those the seconds its windows
    took (`selection_seconds`: a set a user advises on is made once either way), what the row's proxy alone cost
    for this candidate in one case (`proxy_seconds`: the forward it needs, its masks for this setting, its own
    arithmetic), what it needs of the target once per case (`target_seconds`: its norms, masks or n-grams) and
    the CPU they were timed on. Each candidate is scored once (its forward serves every target),
    the targets' masks are computed once per setting."""
    from ..data.sources import build_calibration
    from ..data.strategies import build_strategy_calibration
    from ..metrics.proxies import dense_channel_norms, needs_hessians, norm_divergence, packed_jaccard, packed_masks
    from ..metrics.similarity import build_reference, js_divergence, ngram_overlap, similarity_table, words
    from ..models import load_model
    from ..prune import PruneConfig
    from ..provenance import cpu_kind
    from .advisor import _windows

    emit = on_event or (lambda message: None)
    todo = {key: p for key, p in candidate_points(settings, model).items() if key in wanted}
    if not todo:
        return []
    tour = settings.tournament
    loaded = load_model(model, dtype=tour.resolved_dtype())
    model_, tokenizer = loaded.model, loaded.tokenizer
    configs = [PruneConfig(method=m, **({"pattern": s} if isinstance(s, str) else {"sparsity": float(s)})).resolved()
               for m in tour.methods for s in tour.settings]
    hessians = any(needs_hessians(c) for c in configs)  # SparseGPT's masks come from each set's Hessians
    targets, target_seconds = {}, {}
    for target in settings.targets:
        emit(f"target {target}")
        text = settings.target_text(target)
        windows = build_calibration(text, tokenizer, settings.target_windows, tour.seqlen, TARGET_SEED_OFFSET,
                                    tour.mode)
        norms, norms_seconds = _timed(lambda: dense_channel_norms(model_, windows.input_ids, windows.unpadded_lengths,
                                                                  hessians=hessians))
        reference, reference_seconds = _timed(lambda: build_reference(text))
        masks, masks_seconds = _timed(lambda: [packed_masks(model_, norms, c) for c in configs])
        norms.hessians = None  # [in, in] per module: the masks are made
        targets[target] = (norms, reference, masks)
        # what each proxy needs of the target, once per case: its norms, its masks for one setting, its n-grams
        target_seconds[target] = {"norm_divergence": norms_seconds,
                                  MASK_PROXY: norms_seconds + masks_seconds / len(configs),
                                  "ngram_overlap": reference_seconds, "js_divergence": reference_seconds}
    cpu = cpu_kind()
    rows = []
    for number, ((entry, seed), point) in enumerate(todo.items(), 1):
        emit(f"proxies {number}/{len(todo)}: {model} {entry} seed {seed}")
        started = time.perf_counter()
        chosen = build_strategy_calibration(point.calibration, tokenizer, point.nsamples, tour.seqlen, seed, tour.mode,
                                            point.strategy, dict(point.strategy_options), model=model_)
        selected = time.perf_counter()
        norms, norms_seconds = _timed(lambda: dense_channel_norms(model_, chosen.input_ids, chosen.unpadded_lengths,
                                                                  hessians=hessians))
        masks, masks_seconds = _timed(lambda: [packed_masks(model_, norms, c) for c in configs])
        norms.hessians = None
        (scores, _), forward_seconds = _timed(lambda: similarity_table(
            model_, tokenizer, {entry: _windows(chosen)}, None, max_tokens=tour.seqlen, window=tour.seqlen))
        texts = list(scores["text"])
        base = {"model": model, "entry": entry, "seed": seed}
        entry_rows = []
        for target, (target_norms, reference, target_masks) in targets.items():
            # value and seconds per proxy: its own arithmetic plus the forward it needs (Min-K%++ and the
            # calibration perplexity share one; the norm proxies share the hooked one)
            timed = {"norm_divergence": _timed(lambda: norm_divergence(norms, target_norms), norms_seconds),
                     "ngram_overlap": _timed(lambda: float(np.mean([ngram_overlap(t, reference) for t in texts]))),
                     "js_divergence": _timed(lambda: float(np.mean([js_divergence(Counter(words(t)), reference.unigrams)
                                                                     for t in texts]))),
                     "min_k_pp": (float(scores["min_k_pp"].mean()), forward_seconds),
                     "calib_ppl": (float(scores["ppl"].mean()), forward_seconds)}
            entry_rows += [{**base, "target": target, "proxy": name, "method": "", "setting": "", "value": value,
                            "proxy_seconds": seconds} for name, (value, seconds) in timed.items()]
            for config, own, theirs in zip(configs, masks, target_masks):
                value, seconds = _timed(lambda: packed_jaccard(own, theirs), norms_seconds + masks_seconds / len(configs))
                entry_rows.append({**base, "target": target, "proxy": MASK_PROXY, "method": config.method,
                                   "setting": setting_label(config.as_dict()), "value": value, "proxy_seconds": seconds})
        seconds = time.perf_counter() - started
        rows += [{**row, "seconds": seconds, "selection_seconds": selected - started, "cpu": cpu,
                  "target_seconds": target_seconds[row["target"]].get(row["proxy"], 0.0)} for row in entry_rows]
    return rows


def _timed(compute, plus: float = 0.0):
    """(compute(), its seconds + `plus`): a proxy's value and what it cost."""
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started + plus


def _goodness(values: pd.Series, higher_is_better: bool) -> pd.Series:
    return values if higher_is_better else -values


def seed_reliability(measured: pd.DataFrame) -> tuple[float, float]:
    """How well the measured ranking of the entries (rows) repeats from seed to seed (columns): the mean
    Spearman between every two seeds' rankings (r1), and the noise ceiling that implies for any predictor
    scored against the ranking by the mean over all k seeds: sqrt(k r1 / (1 + (k - 1) r1)), the
    Spearman-Brown reliability of a k-seed mean and the index of reliability, an approximation for ranks.
    The ceiling is 0 where seeds rank the entries no more alike than chance; both are NaN with one seed."""
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


def agreement(proxies: pd.DataFrame, measured: pd.DataFrame, settings: ValidationSettings, seed: int = 0) -> pd.DataFrame:
    """Spearman's rho and Kendall's tau between each proxy's ranking of the entries (its mean over seeds, in
    its direction) and the measured ranking (the capability's mean over seeds), per model, method, setting,
    target and proxy, with 95% intervals from bootstrap resamples of the seeds, and how well the measured
    ranking repeats across seeds (`seed_agreement`) with the noise ceiling that sets on any proxy's Spearman
    (`noise_ceiling`, seed_reliability)."""
    import warnings

    from scipy import stats

    rng = np.random.default_rng(seed)
    rows = []
    for (model, method, setting), cell in measured.groupby(["model", "method", "setting"], sort=False):
        for target in settings.targets:
            capability = settings.capability(target)
            if capability not in cell:
                continue
            truth = cell.pivot_table(index="entry", columns="seed", values=capability)
            for name, proxy in PROXIES.items():
                chosen = proxies[(proxies["model"] == model) & (proxies["target"] == target) & (proxies["proxy"] == name)]
                if name == MASK_PROXY:
                    chosen = chosen[(chosen["method"] == method) & (chosen["setting"] == setting)]
                predicted = chosen.pivot_table(index="entry", columns="seed", values="value")
                entries = sorted(set(truth.index) & set(predicted.index))
                seeds = sorted(set(truth.columns) & set(predicted.columns))
                if len(entries) < 3 or not seeds:
                    continue
                t, p = truth.loc[entries, seeds], predicted.loc[entries, seeds]
                higher = capability == CLOZE

                def correlations(columns):
                    measured_good = _goodness(t[columns].mean(axis=1), higher)
                    predicted_good = _goodness(p[columns].mean(axis=1), proxy.higher_is_better)
                    with warnings.catch_warnings():  # tied means (a resample of one seed): rho is nan, kept so
                        warnings.simplefilter("ignore", stats.ConstantInputWarning)
                        return (stats.spearmanr(predicted_good, measured_good).statistic,
                                stats.kendalltau(predicted_good, measured_good).statistic)

                rho, tau = correlations(seeds)
                repeat, ceiling = seed_reliability(t)
                boot = [correlations(list(rng.choice(seeds, len(seeds)))) for _ in range(settings.bootstrap)]
                spearmans = np.array([b[0] for b in boot], dtype=float)
                rows.append({"model": model, "method": method, "setting": setting, "target": target, "proxy": name,
                             "spearman": rho, "kendall": tau,
                             "spearman_low": float(np.nanpercentile(spearmans, 2.5)),
                             "spearman_high": float(np.nanpercentile(spearmans, 97.5)),
                             "seed_agreement": repeat, "noise_ceiling": ceiling,
                             "candidates": len(entries), "seeds": len(seeds)})
    return pd.DataFrame(rows)


def verdicts(found: pd.DataFrame) -> pd.DataFrame:
    """verdict_of per method, setting, target and proxy, over the models."""
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


def validate(settings: ValidationSettings, store, proxies_csv: Path, table_csv: Path, run_missing: bool = True,
             on_event=None, runs_csv: Path | None = None,
             on_run_event=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The measured runs (missing ones run, unless not `run_missing`), the proxies not yet in `proxies_csv`
    (appended after each model), the agreement table written to `table_csv`; returns it with the verdicts
    and the cost shares (cost_shares; each case's row carries its proxy's). `on_run_event` receives the runs'
    pipeline events, `on_event` the proxies' messages.
    `runs_csv` receives every measured run, also when the runs are interrupted (Ctrl-C): the validation
    outlasts one machine's run store only as that CSV, read back as `previous`."""
    from .tournament import run_tournament, tournament_frame

    try:
        if run_missing:
            run_tournament(settings.tournament, store, on_run_event)
    finally:
        measured = tournament_frame(settings.tournament, store)
        if runs_csv is not None and not measured.empty:
            runs_csv.parent.mkdir(parents=True, exist_ok=True)
            measured.to_csv(runs_csv, index=False)
    proxies = read_rows(proxies_csv)
    done = set(zip(proxies["model"], proxies["entry"], proxies["seed"])) if not proxies.empty else set()
    for model in settings.tournament.models:
        here = measured[measured["model"] == model] if not measured.empty else measured
        wanted = set(zip(here["entry"], here["seed"])) - {(e, s) for m, e, s in done if m == model} if len(here) else set()
        rows = proxy_rows(settings, model, wanted, on_event)
        if rows:
            proxies = pd.concat([proxies, pd.DataFrame(rows)], ignore_index=True)
            proxies.to_csv(proxies_csv, index=False)
    costs = cost_shares(proxies, measured)
    found = agreement(proxies, measured, settings)
    if not found.empty:  # each case carries its proxy's cost share, so advise can apply the verdict rule
        found = found.merge(costs[["model", "method", "proxy", "share"]].rename(columns={"share": "cost_share"}),
                            on=["model", "method", "proxy"], how="left")
    table_csv.parent.mkdir(parents=True, exist_ok=True)
    found.to_csv(table_csv, index=False)
    return found, verdicts(found), costs


RESULTS_HEADING = "## Results"


def write_results(report: Path, found: pd.DataFrame, verdicts_: pd.DataFrame, costs: pd.DataFrame,
                  settings: ValidationSettings, measured_points: int, command: str) -> Path:
    """Replace the Results section of the protocol file `report` (everything above it stays as fixed)."""
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
    summary = (found.groupby(["target", "proxy"], sort=False)
               .agg(mean=("spearman", "mean"), low=("spearman", "min"), high=("spearman", "max"),
                    ceiling=("noise_ceiling", "mean"), cases=("spearman", "count")).reset_index())
    lines += ["Mean Spearman per target and proxy over every (model, method, setting) case measured, with the "
              "lowest and highest case, and the mean noise ceiling of those cases (how high any proxy could score "
              "against a measured ranking that repeats from seed to seed only as much as it does; see below):", "",
              summary.to_markdown(index=False, floatfmt=".2f"), ""]
    lines += _ceiling_lines(found, summary) + _cost_lines(costs)
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


def _ceiling_lines(found: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """How well the measured rankings repeat across seeds, where that alone rules the goal out, and how close
    each target's best proxy comes to its ceiling."""
    cases = found.drop_duplicates(["model", "method", "setting", "target"])
    per_target = cases.groupby("target", sort=False).agg(seed_agreement=("seed_agreement", "mean"),
                                                         ceiling=("noise_ceiling", "mean"),
                                                         below=("noise_ceiling", lambda c: int((c < 0.8).sum())),
                                                         cases=("noise_ceiling", "count")).reset_index()
    below = int((cases["noise_ceiling"] < 0.8).sum())
    return ["Noise ceiling (an analysis added to the fixed protocol; it changes no verdict). Per case, the mean "
            "Spearman between two seeds' measured rankings (seed agreement), and the highest Spearman any "
            "predictor could expect against the ranking by the mean of those seeds, sqrt(k r1 / (1 + (k - 1) r1)) "
            "(Spearman-Brown, then the index of reliability; an approximation for ranks):", "",
            per_target.rename(columns={"below": "cases below 0.8"}).to_markdown(index=False, floatfmt=".2f"), "",
            f"In {below} of {len(cases)} cases the measured ranking repeats too little from seed to seed for any "
            f"proxy to reach a Spearman of 0.8 against it (there the candidates prune alike within seed noise).",
            "", "Each target's best proxy (mean Spearman) against the mean noise ceiling of its cases: "
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
