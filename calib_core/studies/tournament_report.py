"""The tournament's report (strategies.md): its protocol and pilot, written before the first run; then per model,
method, setting and capability each entry's mean ± std over seeds and its paired comparisons (equivalence.py:
interval, minimum detectable effect, verdict); the published claims supported, contradicted or not testable; the
selection costs and machine-hours; figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..data.strategies import RANDOM
from ..errors import MissingDependencyError, NotEnoughDataError
from ..experiments import sweep_figures
from ..experiments.stats import setting_sort_key
from ..provenance import environment_versions
from .tournament import (
    CLOZE,
    DENSE_REFERENCE_FILE,
    THIS_STORE,
    TournamentSettings,
    capabilities,
    carried_dense,
    known_reference,
    tournament_frame,
)
from .tournament_comparisons import BEST_SOURCE, IN_DOMAIN, comparisons, entry_order, power_lines, published_claims
from .tournament_protocol import PILOT_RUNS_FILE, pilot_lines, protocol_lines


def _mean_std(row) -> str:
    digits = 3 if row["capability"] == CLOZE else 2
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def _table(found: pd.DataFrame, model: str, method: str, against: str = RANDOM) -> str:
    """Rows (setting, entry), a column per capability: mean ± std, and the comparison with `against`."""
    part = found[(found["model"] == model) & (found["method"] == method)]
    compared = part[part["against"] == against].set_index(["setting", "entry", "capability"])
    means = part[part["against"] == ""]
    if against != RANDOM:
        means = means[means["entry"].isin(compared.index.get_level_values("entry"))]
    cells = []
    for row in means.itertuples():
        text = _mean_std(row._asdict())
        key = (row.setting, row.entry, row.capability)
        if key in compared.index:
            text += "; " + describe_row(compared.loc[key], row.capability)
        cells.append({"setting": row.setting, "entry": row.entry, "capability": row.capability, "cell": text})
    table = pd.DataFrame(cells).pivot_table(index=["setting", "entry"], columns="capability", values="cell",
                                            aggfunc="first")
    table = table[[c for c in part["capability"].unique() if c in table.columns]].reset_index()
    order = entry_order(part["entry"].unique())
    table["_s"], table["_e"] = table["setting"].map(setting_sort_key), table["entry"].map(order.index)
    return table.sort_values(["_s", "_e"]).drop(columns=["_s", "_e"]).set_index(["setting", "entry"]).fillna(
        "").to_markdown()


def describe_row(row, capability: str) -> str:
    """A comparison row as 'Δ [low, high], MDE x: verdict' (vs its baseline when that is not in the column)."""
    from ..experiments.equivalence import Comparison, describe

    comparison = Comparison(int(row["n"]), row["diff"], row["low"], row["high"], row["sd_diff"], row["mde"],
                            row["verdict"], 0.0)
    named = f"vs {row['baseline']}: " if row["against"] in (IN_DOMAIN, BEST_SOURCE) else ""
    return named + describe(comparison, capability)


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
    out["_e"] = out["entry"].map(lambda e: entry_order(out["entry"].unique()).index(e))
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


def _figure(found: pd.DataFrame, model: str, method: str):
    import plotly.express as px

    part = found[(found["model"] == model) & (found["method"] == method) & (found["against"] == "")]
    if part.empty:
        raise NotEnoughDataError(f"No {method} runs on {model}.")
    order = entry_order(part["entry"].unique())
    settings = sorted(part["setting"].unique(), key=setting_sort_key)
    fig = px.bar(part, x="entry", y="mean", error_y="std", color="entry", facet_col="capability",
                 facet_row="setting", category_orders={"entry": order, "setting": settings},
                 title=f"{model}, {method}: each strategy per capability (mean ± std over seeds)",
                 labels={"mean": "", "entry": ""})
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(showticklabels=False)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    # Tall enough for the legend's every entry (ten with the single sources).
    fig.update_layout(height=max(260 * len(settings) + 120, 24 * len(order) + 200), legend_title_text="entry")
    return fig


def write_tournament_report(settings: TournamentSettings, store, out: str | Path = "docs/results",
                            command: str | None = None, earlier: str | None = None) -> Path:
    """strategies.md, its figures and strategies-runs.csv in `out`, from the finished runs; with none finished yet,
    the protocol and the pilot alone (so the protocol is written before its first run). `earlier`: the report
    of an earlier protocol, linked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = tournament_frame(settings, store)
    names = capabilities(settings)
    found = comparisons(frame, names, settings.source) if not frame.empty else pd.DataFrame()
    own = {m: r for m in settings.models if (r := known_reference(settings, m, store)) is not None}
    carried = carried_dense(settings)
    # The earlier runs' reference stays the report's when this store has its own: the stated dense numbers then do
    # not depend on the machine that ran the last points (bfloat16 differs a little between CPUs); both are shown.
    dense_of = {**{m: r["dense"] for m, r in own.items()}, **carried}
    planned = sum(len(settings.points(m)) for m in settings.models)
    lines = [
        "# Calibration strategies: a tournament per capability", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the runs of "
        f"`{command or 'python -m calib_core tournament'}` ({len(frame)} of {planned} points finished; the command "
        "resumes, skipping finished points)." + (_origins(frame, settings) if not frame.empty else ""), "",
    ]
    if earlier:
        lines += [f"The first tournament, at a scale that could not detect the published effects, is kept in "
                  f"[{earlier}]({earlier}), re-read there with these intervals and margins.", ""]
    lines += protocol_lines(settings)
    pilot = out / PILOT_RUNS_FILE
    if pilot.is_file():
        lines += pilot_lines(pd.read_csv(pilot), settings)
    if frame.empty:
        lines += ["## Results", "", "No point of this protocol has finished yet.", ""]
        (out / "strategies.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out / "strategies.md"
    frame = with_forward_unit(frame, own)  # this machine's forward for this store's rows only
    lines += result_lines(found, frame, settings, out, dense_of, own, carried)
    report = out / "strategies.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame.to_csv(out / "strategies-runs.csv", index=False)
    (out / DENSE_REFERENCE_FILE).write_text(json.dumps(
        {model: {"dtype": settings.resolved_dtype(), "dense": dense} for model, dense in dense_of.items()}, indent=2))
    return report


def write_reread(runs_csv: str | Path) -> Path:
    """strategies-reread.md beside an earlier tournament's runs CSV: its rows compared as this protocol compares
    them (paired intervals, margins, minimum detectable effects, claims), at the scale they were run."""
    runs_csv = Path(runs_csv)
    frame = pd.read_csv(runs_csv)
    names = [c for c in frame.columns if c.startswith("ppl builtin:")] + ([CLOZE] if CLOZE in frame else [])
    found = comparisons(frame, names)
    compared = found[found["against"] != ""]
    tally = compared.pivot_table(index="entry", columns="verdict", values="n", aggfunc="count", fill_value=0)
    lines = ["# The first tournament, re-read with paired intervals and equivalence margins", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python -m calib_core tournament "
             f"--reread {runs_csv.as_posix()}` from the {len(frame)} runs of [strategies.md](strategies.md), as the "
             "powered protocol compares its runs (docs/results/strategies.md states the rules). No run was made. "
             "The runs are those of that report: self-calibration and icl-format as they were then (temperature "
             "1.5 -> 0.8 over the whole window with EOS suppressed; cloze-format prompts), since revised. The "
             "mix is compared with the single sources only where the runs hold them (this tournament drew from "
             "wiki alone).", "",
             "## Published claims", "", *published_claims(found), "", *power_lines(found),
             "## Verdicts per entry", "", tally.reset_index().to_markdown(index=False), ""]
    out = runs_csv.with_name("strategies-reread.md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def result_lines(found, frame, settings, out, dense_of, own, carried) -> list[str]:
    """Claims, power, costs, per-model tables and figures, the tally of verdicts."""
    lines = ["## Published claims on our models", "", *published_claims(found), "", *power_lines(found),
             "## Selection cost", "",
             "Median seconds per selection (one per seed; later points reuse it) and the median multiple of one "
             "dense forward with logits over a pool of 10 x nsamples windows measured on the machine each "
             "selection ran on (empty where a carried CSV did not record that forward). Random and mix: the "
             "time to read and draw the windows.", ""]
    costs = cost_table(frame)
    lines += [costs.to_markdown(index=False, floatfmt=".2f") if not costs.empty else "(no selections recorded)", ""]
    lines += machine_hours(frame)
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
            mine = found[(found["model"] == model) & (found["method"] == method)]
            if mine.empty:
                continue
            lines += [f"### {method}", "", "Mean ± std over seeds; for each entry its paired difference to random "
                      "(perplexity in percent, accuracy in points), the family-wise 95% interval, the minimum "
                      "detectable effect and the verdict.", "", _table(found, model, method), ""]
            for against, title in (("least-ppl", "unique-tokens against least-ppl"),
                                   (IN_DOMAIN, "the mix against each domain's own single source"),
                                   (BEST_SOURCE, "the mix against the best single source of the cell")):
                if (mine["against"] == against).any():
                    lines += [f"{method}, {title}:", "", _table(found, model, method, against), ""]
            name = f"strategies-{model}-{method}"
            try:
                png = sweep_figures.export(_figure(found, model, method), out / f"{name}.png", width=1300)
                lines += [f"![{model} {method}]({png.name})", ""]
            except (NotEnoughDataError, MissingDependencyError) as exc:
                lines += [f"(figure {name} not drawn: {exc})", ""]
    compared = found[found["against"] != ""]
    verdicts = compared["verdict"].value_counts().to_dict()
    lines += ["## All verdicts", "",
              f"{len(compared)} comparisons: " + ", ".join(f"{n} {v}" for v, n in verdicts.items())
              + ". Each family's intervals hold together with 95% confidence, so across many families a few "
              "'better' or 'worse' can still be noise: read the verdicts that repeat across settings and models.", ""]
    return lines


def machine_hours(frame: pd.DataFrame) -> list[str]:
    """The machine-hours the report's runs cost, per model and where they ran (rows that recorded their time)."""
    if "run_seconds" not in frame or frame["run_seconds"].dropna().empty:
        return []
    timed = frame.dropna(subset=["run_seconds"])
    where = timed["cpu"].fillna("not recorded") if "cpu" in timed else pd.Series("not recorded", index=timed.index)
    hours = timed.groupby([timed["model"], where])["run_seconds"].agg(["count", "sum"]).reset_index()
    hours.columns = ["model", "cpu", "runs", "hours"]
    hours["hours"] = hours["hours"] / 3600
    return ["Machine-hours of the runs (choosing windows, pruning, every evaluation; torch threads as each record "
            "names):", "", hours.to_markdown(index=False, floatfmt=".1f"), ""]


def _machines(frame: pd.DataFrame) -> str:
    """How many rows each kind of CPU computed (rows carried from CSVs before these columns: not recorded)."""
    if "cpu" not in frame:
        return ""
    kinds = (frame["cpu"].fillna("not recorded") + frame["cpu_half_arithmetic"].map(
        lambda names: f" (half arithmetic: {names})" if isinstance(names, str) else "")).value_counts()
    return " Computed on: " + ", ".join(f"{n} rows {kind}" for kind, n in kinds.items()) + "."


def _capabilities(dense: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" if k == CLOZE else f"{k} {v:.2f}" for k, v in dense.items())


def _origins(frame: pd.DataFrame, settings: TournamentSettings) -> str:
    """Where the rows came from, when some were read from an earlier runs CSV."""
    earlier = frame[frame["origin"] != THIS_STORE]
    if earlier.empty:
        return ""
    return (f" {len(earlier)} of them were read from `{settings.previous}` (runs of the same points, matched by point "
            f"key, made earlier: {', '.join(sorted(earlier['origin'].unique()))}); the other {len(frame) - len(earlier)}"
            " ran in this run store. The selection-cost unit (one dense forward) is measured on this machine."
            + _machines(frame))

