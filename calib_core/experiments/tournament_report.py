"""The tournament's report (strategies.md): per model, method, setting and capability, each entry's
mean ± std over seeds, its difference to random with a Welch test (Holm-adjusted within the family) and
a verdict; the selection costs; the published directions checked; figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..errors import MissingDependencyError, NotEnoughDataError
from ..provenance import environment_versions
from . import sweep_figures
from .stats import higher_is_better, setting_sort_key
from .tournament import (ALPHA, CLOZE, DENSE_REFERENCE_FILE, MIX, VERDICT_RULES, TournamentSettings, capabilities,
                         carried_dense, known_reference, tournament_frame, THIS_STORE)
from ..data.strategies import RANDOM, STRATEGIES

# What the papers report, as directions our runs can confirm or not: (entry, capabilities, the direction
# that would confirm it, the claim and where it comes from).
PUBLISHED = [
    ("least-ppl", None, "not worse", "least-perplexity selection matches or beats a random draw (ZipCal and COLA "
                                     "baselines)"),
    ("unique-tokens", None, "not worse", "unique-token coverage matches least-perplexity and random at a fraction of "
                                         "the cost (ZipCal: 0.5370 vs 0.5327 random, Llama-3.2-3B, Wanda 50%)"),
    ("activation-kmeans", ["ppl builtin:code", CLOZE], "better", "activation k-means preserves capabilities (math, "
                                                                "code) better than random (COLA)"),
    ("self-calibration", None, "not worse", "self-calibration is consistently competitive with real data (Williams "
                                            "et al.)"),
    (MIX, None, "better", "a uniform multi-source mix beats a single source (IGSP: 58.8% vs 50.0% retained, "
                          "SparseGPT 60%)"),
    ("icl-format", None, "better", "in-context formatted task data helps broadly (Bandari et al.)"),
]


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def comparisons(frame: pd.DataFrame, capability_names: list[str]) -> pd.DataFrame:
    """One row per (model, method, setting, capability, entry): mean, std, n, the difference to random,
    Welch's t and p, the Holm-adjusted p within the family, and the verdict (VERDICT_RULES)."""
    from scipy import stats

    rows = []
    for (model, method, setting), cell in frame.groupby(["model", "method", "setting"], sort=False):
        for capability in capability_names:
            if capability not in cell:
                continue
            baseline = cell.loc[cell["entry"] == RANDOM, capability].dropna()
            family = []
            for entry, group in cell.groupby("entry", sort=False):
                values = group[capability].dropna()
                row = {"model": model, "method": method, "setting": setting, "capability": capability,
                       "entry": entry, "mean": values.mean(), "std": values.std(ddof=1) if len(values) > 1 else 0.0,
                       "n": len(values), "diff": values.mean() - baseline.mean() if len(baseline) else float("nan"),
                       "t": float("nan"), "p": float("nan")}
                if entry != RANDOM and len(values) >= 2 and len(baseline) >= 2:
                    test = stats.ttest_ind(values, baseline, equal_var=False)
                    row.update(t=float(test.statistic), p=float(test.pvalue))
                    family.append(len(rows))
                rows.append(row)
            ps = [rows[i]["p"] if rows[i]["p"] == rows[i]["p"] else 1.0 for i in family]  # nan (constant): 1
            for i, adjusted in zip(family, holm(ps)):
                rows[i]["p_holm"] = adjusted
                rows[i]["verdict"] = _verdict(rows[i]["diff"], adjusted, capability)
    out = pd.DataFrame(rows)
    if not out.empty:
        out.loc[out["entry"] == RANDOM, "verdict"] = "baseline"
        out["verdict"] = out["verdict"].fillna("too few seeds")
    return out


def _verdict(diff: float, p_adjusted: float, capability: str) -> str:
    if not p_adjusted < ALPHA:
        return "within seed noise"
    better = diff > 0 if higher_is_better(capability) else diff < 0
    return "better" if better else "worse"


def _entry_order(entries) -> list[str]:
    known = [*STRATEGIES, MIX]
    return sorted(entries, key=lambda e: (known.index(e) if e in known else len(known), e))


def _cell(row) -> str:
    digits = 3 if row["capability"] == CLOZE else 2
    text = f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"
    if row["entry"] != RANDOM and row["diff"] == row["diff"]:
        text += f" ({row['diff']:+.{digits}f}, p {row.get('p_holm', float('nan')):.2g}: {row['verdict']})"
    return text


def _table(found: pd.DataFrame, model: str, method: str) -> str:
    part = found[(found["model"] == model) & (found["method"] == method)].copy()
    part["cell"] = part.apply(_cell, axis=1)
    table = part.pivot_table(index=["setting", "entry"], columns="capability", values="cell", aggfunc="first")
    columns = [c for c in part["capability"].unique()]
    table = table[columns]
    table = table.reset_index()
    table["_s"] = table["setting"].map(setting_sort_key)
    table["_e"] = table["entry"].map(lambda e: _entry_order(part["entry"].unique()).index(e))
    return table.sort_values(["_s", "_e"]).drop(columns=["_s", "_e"]).set_index(["setting", "entry"]).to_markdown()


def cost_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model and entry: the median seconds a selection took (each made once per seed) and the median of
    each selection over one dense forward over a 10 x nsamples pool measured where that selection ran
    (`pool_forward_seconds`; NaN for rows carried from a CSV that did not record it)."""
    rows = []
    for (model, entry), group in frame.groupby(["model", "entry"], sort=False):
        measured = group.dropna(subset=["selection_seconds"])
        forward = pd.to_numeric(measured.get("pool_forward_seconds", pd.Series(index=measured.index, dtype=float)),
                                errors="coerce")
        multiples = (measured["selection_seconds"] / forward).dropna()
        rows.append({"model": model, "entry": entry, "selections": len(measured),
                     "median seconds": float(measured["selection_seconds"].median()) if len(measured) else float("nan"),
                     "x dense forward over the pool": float(multiples.median()) if len(multiples) else float("nan")})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_e"] = out["entry"].map(lambda e: _entry_order(out["entry"].unique()).index(e))
    return out.sort_values(["model", "_e"]).drop(columns="_e").reset_index(drop=True)


def with_forward_unit(frame: pd.DataFrame, references: dict) -> pd.DataFrame:
    """The runs with `pool_forward_seconds`: this store's model reference for its own rows, the recorded unit
    (or none) for rows carried from an earlier CSV, so every multiple divides by the machine's own forward."""
    frame = frame.copy()
    mine = frame["origin"] == THIS_STORE
    here = frame.loc[mine, "model"].map(lambda m: (references.get(m) or {}).get("pool_forward_seconds"))
    if "pool_forward_seconds" not in frame.columns:
        frame["pool_forward_seconds"] = float("nan")
    frame.loc[mine, "pool_forward_seconds"] = here.astype(float)
    return frame


def published_directions(found: pd.DataFrame) -> list[str]:
    """Per published claim: in how many of our cells (model x method x setting x capability) its direction
    holds, and where it does not."""
    lines = []
    for entry, capability_names, wanted, claim in PUBLISHED:
        rows = found[(found["entry"] == entry) & found["verdict"].isin(["better", "worse", "within seed noise"])]
        if capability_names:
            rows = rows[rows["capability"].isin(capability_names)]
        if rows.empty:
            lines.append(f"- {claim}: not measured.")
            continue
        holds = rows["verdict"] != "worse" if wanted == "not worse" else rows["verdict"] == "better"
        counts = rows["verdict"].value_counts().to_dict()
        tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("better", "within seed noise", "worse"))
        verdict = ("**holds**" if holds.all() else "**does not hold**" if not holds.any()
                   else "**holds in part**")
        fails = rows[~holds]
        where = "; fails at " + ", ".join(
            f"{r.model} {r.method} {r.setting} {r.capability}" for r in fails.head(6).itertuples()) + (
            " ..." if len(fails) > 6 else "") if len(fails) and holds.any() else ""
        lines.append(f"- {verdict} ({wanted} than random in {int(holds.sum())} of {len(rows)} cells: {tally}): "
                     f"{claim}{where}.")
    return lines


def _figure(found: pd.DataFrame, model: str, method: str):
    import plotly.express as px

    part = found[(found["model"] == model) & (found["method"] == method)]
    if part.empty:
        raise NotEnoughDataError(f"No {method} runs on {model}.")
    order = _entry_order(part["entry"].unique())
    settings = sorted(part["setting"].unique(), key=setting_sort_key)
    fig = px.bar(part, x="entry", y="mean", error_y="std", color="entry", facet_col="capability",
                 facet_row="setting", category_orders={"entry": order, "setting": settings},
                 title=f"{model}, {method}: each strategy per capability (mean ± std over seeds)",
                 labels={"mean": "", "entry": ""})
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(showticklabels=False)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(height=260 * len(settings) + 120, legend_title_text="strategy")
    return fig


def write_tournament_report(settings: TournamentSettings, store, out: str | Path = "docs/results",
                            command: str | None = None) -> Path:
    """strategies.md, its figures and strategies-runs.csv in `out`, from the finished runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = tournament_frame(settings, store)
    if frame.empty:
        raise NotEnoughDataError(f"The tournament '{settings.name}' has no finished runs in {store.path}.")
    names = capabilities(settings)
    found = comparisons(frame, names)
    own = {m: r for m in settings.models if (r := known_reference(settings, m, store)) is not None}
    frame = with_forward_unit(frame, own)  # this machine's forward for this store's rows only
    carried = carried_dense(settings)
    # The earlier runs' reference stays the report's when this store has its own: the stated dense numbers then do
    # not depend on the machine that ran the last points (bfloat16 differs a little between CPUs); both are shown.
    dense_of = {**{m: r["dense"] for m, r in own.items()}, **carried}
    planned = sum(len(settings.points(m)) for m in settings.models)
    lines = [
        "# Calibration strategies: a tournament per capability", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the runs of "
        f"`{command or 'python -m calib_core tournament'}` ({len(frame)} of {planned} points finished; the command "
        "resumes, skipping finished points)." + _origins(frame, settings), "",
        "What is measured:",
        f"- Entries: the strategies {', '.join(settings.strategies)} choosing from `{settings.source}`"
        + (f", and `mix`: the random draw from `{settings.mix}`" if settings.mix else "") + ". Every entry's windows "
        f"are {settings.nsamples} x {settings.seqlen} tokens ({settings.mode} sampling for the pool and random draws).",
        f"- Methods {', '.join(settings.methods)} at {', '.join(str(s) for s in settings.settings)}, in "
        f"{settings.resolved_dtype()} ({_dtype_origin(settings)}); seeds "
        f"0-{settings.seeds - 1} (a seed fixes the pool, the draw and a strategy's own randomness).",
        f"- Capabilities, each its own column, never averaged: held-out perplexity on "
        f"{', '.join(settings.eval)} ({settings.eval_windows} x {settings.seqlen}-token windows each, the same for every "
        f"run; lower is better)" + (f", and the 4-way cloze proxy ({settings.cloze_items} items per domain, "
                                    f"accuracy averaged over the domains; chance 0.25, higher is better)"
                                    if settings.cloze_items else "") + ".",
        f"- Verdicts: {VERDICT_RULES}", "",
        "Strategy settings (defaults of data/strategies.py unless listed):", "",
    ]
    for name in settings.strategies:
        if STRATEGIES[name].settings:
            described = ", ".join(f"{s.name} {s.default}" for s in STRATEGIES[name].settings)
            lines.append(f"- {name}: {described}")
    lines += ["", "Settings:", "", "```json", json.dumps(settings.as_dict(), indent=1), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in environment_versions().items() if v), ""]
    lines += ["## Published directions on our models", "", *published_directions(found), "",
              "## Selection cost", "",
              "Median seconds per selection (one per seed; later points reuse it) and the median multiple of one "
              "dense forward with logits over a pool of 10 x nsamples windows measured on the machine each "
              "selection ran on (empty where a carried CSV did not record that forward). Random and mix: the "
              "time to read and draw the windows.", ""]
    costs = cost_table(frame)
    lines += [costs.to_markdown(index=False, floatfmt=".2f") if not costs.empty else "(no selections recorded)", ""]
    figure_notes = []
    for model in settings.models:
        dense = dense_of.get(model)
        lines += [f"## {model}", ""]
        if dense:
            source = f" (from `{DENSE_REFERENCE_FILE}` beside {settings.previous})" if model in carried else ""
            lines += [f"Dense model{source}: {_capabilities(dense)}", ""]
            if model in carried and model in own:
                versions = environment_versions()
                lines += [f"Dense model measured again by this run store's machine ({versions['cpu']}, half "
                          f"arithmetic: {versions['cpu_half_arithmetic']}): {_capabilities(own[model]['dense'])}", ""]
        for method in settings.methods:
            if found[(found["model"] == model) & (found["method"] == method)].empty:
                continue
            lines += [f"### {method}", "", "Mean ± std over seeds; for each strategy, (difference to random, "
                      "Holm-adjusted Welch p: verdict).", "", _table(found, model, method), ""]
            name = f"strategies-{model}-{method}"
            try:
                png = sweep_figures.export(_figure(found, model, method), out / f"{name}.png", width=1300)
                lines += [f"![{model} {method}]({png.name})", ""]
            except (NotEnoughDataError, MissingDependencyError) as exc:
                figure_notes.append(f"{name}: {exc}")
                lines += [f"(figure {name} not drawn: {exc})", ""]
    verdicts = found[found["entry"] != RANDOM]["verdict"].value_counts().to_dict()
    lines += ["## All verdicts", "",
              f"{sum(verdicts.values())} comparisons with random: " + ", ".join(f"{n} {v}" for v, n in verdicts.items())
              + f". With {ALPHA:g} per family after Holm, a handful of 'better' or 'worse' among hundreds of "
              "comparisons is what noise alone can give; read the verdicts that repeat across settings and models.",
              ""]
    report = out / "strategies.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame.to_csv(out / "strategies-runs.csv", index=False)
    (out / DENSE_REFERENCE_FILE).write_text(json.dumps(
        {model: {"dtype": settings.resolved_dtype(), "dense": dense} for model, dense in dense_of.items()}, indent=2))
    return report


def _machines(frame: pd.DataFrame) -> str:
    """How many rows each kind of CPU computed (rows carried from CSVs before these columns: not recorded)."""
    if "cpu" not in frame:
        return ""
    kinds = (frame["cpu"].fillna("not recorded") + frame["cpu_half_arithmetic"].map(
        lambda names: f" (half arithmetic: {names})" if isinstance(names, str) else "")).value_counts()
    return " Computed on: " + ", ".join(f"{n} rows {kind}" for kind, n in kinds.items()) + "."


def _capabilities(dense: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" if k == CLOZE else f"{k} {v:.2f}" for k, v in dense.items())


def _dtype_origin(settings: TournamentSettings) -> str:
    if settings.dtype != "auto":
        return "as set"
    if settings.earlier_dtype():
        return "the dtype of the earlier runs it continues"
    return "the native dtype of the machine that ran them"


def _origins(frame: pd.DataFrame, settings: TournamentSettings) -> str:
    """Where the rows came from, when some were read from an earlier runs CSV."""
    earlier = frame[frame["origin"] != THIS_STORE]
    if earlier.empty:
        return ""
    return (f" {len(earlier)} of them were read from `{settings.previous}` (runs of the same points, matched by point "
            f"key, made earlier: {', '.join(sorted(earlier['origin'].unique()))}); the other {len(frame) - len(earlier)}"
            " ran in this run store. The selection-cost unit (one dense forward) is measured on this machine."
            + _machines(frame))

