"""What the advisor's validation computes from its rows, apart from any one case: how well a measured ranking
repeats across seeds, Spearman's rho under resampling, and what ranking by a proxy costs against pruning with
every candidate."""

from __future__ import annotations

import numpy as np
import pandas as pd


def goodness(values: pd.Series, higher_is_better: bool) -> pd.Series:
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


def resampled_spearman(predicted: np.ndarray, measured: np.ndarray, seeds: np.ndarray, rows: np.ndarray) -> np.ndarray:
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


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.nanpercentile(values, q)) if np.isfinite(values).any() else float("nan")


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
    from .advisor import MASK_PROXY, PROXIES

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
