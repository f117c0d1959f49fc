"""The Results section of the advisor's validation report (docs/results/advisor.md): the agreement per target
and proxy, within one source and across sources, its intervals, the seed-noise reference, the SparseGPT mask
proxy beside the Wanda one, the costs and the verdicts. Everything above the section is the protocol, fixed
before the runs, and stays as it is."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .advisor import ACROSS_SOURCES, ALL, MASK_PROXY, ONE_SOURCE, RANKS, protocol_rows
from .advisor_validation import ValidationSettings

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
             "`calib_core/data/advisor_validation.csv` (what `advise` looks up); the proxies per candidate and seed: "
             "`docs/results/advisor-proxies.csv`.", ""]
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
