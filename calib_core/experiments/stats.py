"""Statistics over a sweep's runs: one row per finished run, mean/std per group, the spread across
calibration sources, and a Welch t-test between two sources. Plain pandas/scipy, no plotting."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

from ..errors import NotEnoughDataError
from ..runs.store import strategy_label

# The sweep's headline metric: the geometric mean of the held-out perplexities of every eval source,
# so no single domain (and no source's in-domain advantage) dominates.
PPL = "ppl"
SETTING_ORDER = ["50%", "60%", "70%", "80%", "90%", "4:8", "2:4", "1:4"]


def higher_is_better(metric: str) -> bool:
    """Accuracies (cloze, zero-shot) go up when pruning does less harm; perplexities go down."""
    return "acc" in metric


def setting_label(config: dict) -> str:
    pattern = str(config.get("pattern", "unstructured"))
    return pattern if ":" in pattern else f"{round(float(config['sparsity']) * 100):d}%"


def setting_sort_key(label: str) -> tuple:
    return (SETTING_ORDER.index(label), label) if label in SETTING_ORDER else (len(SETTING_ORDER), label)


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per finished run: what was varied, and every metric it recorded."""
    rows = []
    for run in runs:
        record = run.get("record")
        if run.get("status") != "finished" or not record:
            continue
        config = record.get("config") or run.get("config") or {}
        calibration = record.get("calibration") or {}
        strategy = strategy_label(record) or "none"
        # A strategy other than the random draw is part of what the calibration data is, so every view that
        # groups runs by calibration keeps them apart.
        chosen_by = f" by {strategy}" if strategy not in ("random", "none") else ""
        row = {
            "run_id": run["id"], "sweep": run.get("sweep"), "method": config.get("method"),
            "setting": setting_label(config), "calibration": (run.get("calibration") or "none") + chosen_by,
            "strategy": strategy,
            "nsamples": calibration.get("nsamples", 0), "seed": calibration.get("seed", 0),
            "overall_sparsity": record.get("overall_sparsity"),
        }
        logs = []
        for ppl in record.get("perplexity", []):
            row[f"ppl {ppl['source']}"] = ppl["ppl"]
            logs.append(math.log(ppl["ppl"]))
        row[PPL] = math.exp(sum(logs) / len(logs)) if logs else float("nan")
        for cloze in record.get("cloze", []):
            row[f"cloze acc {cloze['source']}"] = cloze["acc"]
            row[f"cloze acc_norm {cloze['source']}"] = cloze["acc_norm"]
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_frame(store, sweep: str) -> pd.DataFrame:
    frame = runs_frame(store.sweep_runs(sweep))
    if frame.empty:
        raise NotEnoughDataError(f"Sweep '{sweep}' has no finished runs in {store.path}.")
    return frame


def summarize(frame: pd.DataFrame, by: list[str], metric: str = PPL) -> pd.DataFrame:
    """mean, std (over seeds, ddof 1), n and standard error per group."""
    grouped = frame.groupby(by, sort=False)[metric]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["sem"] = out["std"] / out["n"].pow(0.5)
    return out


def spread_by_setting(frame: pd.DataFrame, metric: str = PPL, method: str = "wanda") -> pd.DataFrame:
    """Per setting: max - min over calibration sources of the mean metric, and which source is
    best and worst (lowest perplexity, highest accuracy)."""
    means = summarize(frame[frame["method"] == method], ["setting", "calibration"], metric)
    rows = []
    for setting, group in means.groupby("setting", sort=False):
        low, high = group.loc[group["mean"].idxmin()], group.loc[group["mean"].idxmax()]
        best, worst = (high, low) if higher_is_better(metric) else (low, high)
        spread = high["mean"] - low["mean"]
        rows.append({"setting": setting, "spread": spread, "relative spread": spread / abs(best["mean"]),
                     "best": best["calibration"], "worst": worst["calibration"], "sources": len(group),
                     "min seeds": int(group["n"].min())})
    out = pd.DataFrame(rows)
    return out.sort_values("setting", key=lambda s: s.map(setting_sort_key)).reset_index(drop=True) if rows else out


@dataclass
class WelchResult:
    source_a: str
    source_b: str
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    t: float
    p: float

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, alpha: float = 0.05) -> str:
        verdict = "differ" if self.p < alpha else "do not differ"
        return (f"{self.source_a} (mean {self.mean_a:.3f}, n={self.n_a}) vs {self.source_b} (mean {self.mean_b:.3f}, "
                f"n={self.n_b}): Welch t = {self.t:.2f}, p = {self.p:.3g}; they {verdict} at alpha {alpha}.")


def welch_test(frame: pd.DataFrame, source_a: str, source_b: str, metric: str = PPL) -> WelchResult:
    """Welch's unequal-variance t-test between two calibration sources' per-seed metrics (filter the
    frame to one method and setting first)."""
    from scipy import stats

    a = frame.loc[frame["calibration"] == source_a, metric].dropna()
    b = frame.loc[frame["calibration"] == source_b, metric].dropna()
    if len(a) < 2 or len(b) < 2:
        raise NotEnoughDataError(f"A t-test needs at least 2 seeds per source; {source_a} has {len(a)}, "
                          f"{source_b} has {len(b)}.")
    result = stats.ttest_ind(a, b, equal_var=False)
    return WelchResult(source_a, source_b, float(a.mean()), float(b.mean()), len(a), len(b),
                       float(result.statistic), float(result.pvalue))


def similarity_vs_perplexity(runs, scores: dict[str, dict[str, dict]], metric: str):
    """One row per (model, method, setting, calibration source) whose source has recorded similarity
    scores for that model (`scores`: model -> source -> means, from RunStore.similarity_scores): the
    source's mean Min-K%++ and the mean, spread and count of `metric` over its runs (seeds)."""
    import pandas as pd

    columns = ["model", "method", "setting", "calibration", "min_k_pp", "ppl_mean", "ppl_std", "runs"]
    rows = []
    finished = runs[runs.status == "finished"].dropna(subset=[metric, "calibration"])
    for (model, method, setting, source), group in finished.groupby(["model", "method", "sparsity", "calibration"]):
        score = scores.get(model, {}).get(source)
        if score is None or score.get("min_k_pp") is None:
            continue
        values = group[metric].astype(float)
        rows.append([model, method, str(setting), source, float(score["min_k_pp"]), float(values.mean()),
                     float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)])
    return pd.DataFrame(rows, columns=columns)


def evaluation_of(run: dict, source: str) -> tuple | None:
    """(model, protocol, seqlen, windows) of `run`'s perplexity on `source`: two perplexities compare
    only when these match. None when the run has no perplexity on `source`."""
    entry = next((p for p in (run.get("record") or {}).get("perplexity", []) if p["source"] == source), None)
    return (run["model"], entry["protocol"], entry["seqlen"], entry["windows"]) if entry else None


def dense_baseline(runs: list[dict], reference: dict, source: str) -> float | None:
    """The perplexity on `source` of the latest finished dense run evaluated exactly as `reference`
    was (same model, protocol, seqlen and windows); None when there is none."""
    from ..runs.pipeline import DENSE

    wanted = evaluation_of(reference, source)
    matching = [r for r in runs if r["method"] == DENSE and r["status"] == "finished"
                and wanted is not None and evaluation_of(r, source) == wanted]
    if not matching:
        return None
    return next(p["ppl"] for p in matching[-1]["record"]["perplexity"] if p["source"] == source)


def transfer_table(frame: pd.DataFrame, method: str, setting: str, nsamples: int | None = None) -> pd.DataFrame:
    """Calibrate on A, evaluate on B: for one method and setting (and sample count; default the largest),
    one row per (calibration source or strategy, evaluation domain) with the pruned perplexity's mean, std
    and seeds, its ratio to the best calibration's mean on that domain (1 = the best), and Welch's p against
    that best calibration (NaN for the best itself or with fewer than 2 seeds on either side)."""
    from scipy import stats

    data = frame[(frame["method"] == method) & (frame["setting"] == setting)]
    counts = sorted(c for c in data["nsamples"].unique() if c)
    if counts:
        data = data[data["nsamples"] == (nsamples if nsamples is not None else counts[-1])]
    domains = [c for c in data.columns if c.startswith("ppl ") and data[c].notna().any()]
    if data.empty or not domains:
        raise NotEnoughDataError(f"No finished {method} runs at {setting} with per-domain perplexities.")
    rows = []
    for domain in domains:
        values = {source: group[domain].dropna() for source, group in data.groupby("calibration", sort=False)}
        values = {source: v for source, v in values.items() if len(v)}
        best = min(values, key=lambda source: values[source].mean())
        for source, v in values.items():
            p = float("nan")
            if source != best and len(v) >= 2 and len(values[best]) >= 2:
                p = float(stats.ttest_ind(v, values[best], equal_var=False).pvalue)
            rows.append({"calibration": source, "domain": domain.removeprefix("ppl "), "mean": float(v.mean()),
                         "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
                         "relative": float(v.mean() / values[best].mean()), "best": best, "p_vs_best": p})
    return pd.DataFrame(rows)
