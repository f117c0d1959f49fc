"""The tournament's report (strategies.md): its protocol and pilot, written before the first run; then per model,
method, setting and capability each entry's mean ± std over seeds and its paired comparisons (equivalence.py:
interval, minimum detectable effect, verdict); the published claims supported, contradicted or not testable; the
selection costs and machine-hours; figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from ..errors import MissingDependencyError, NotEnoughDataError
from ..provenance import environment_versions
from . import sweep_figures
from .stats import higher_is_better, setting_sort_key
from .equivalence import compare, differences
from .tournament import (CLOZE, DENSE_REFERENCE_FILE, MIX, PROTOCOL_DATE, TournamentSettings, capabilities, carried_dense,
                         known_reference, tournament_frame, THIS_STORE)
from ..data.strategies import RANDOM, STRATEGIES

IN_DOMAIN, BEST_SOURCE = "in-domain source", "best single source"

# What the papers report, as claims our cells can support, contradict or leave untested: (entry, the entry it is
# compared with, capabilities (None: every one), the kind of claim (equivalence.CLAIM_KINDS), the claim).
PUBLISHED = [
    ("least-ppl", RANDOM, None, "not worse", "least-perplexity selection matches or beats a random draw (ZipCal and "
                                             "COLA baselines)"),
    ("unique-tokens", "least-ppl", None, "matches", "unique-token coverage matches least-perplexity selection at a "
                                                    "fraction of the cost (ZipCal: 0.5370 vs 0.5363, Llama-3.2-3B, "
                                                    "Wanda 50%)"),
    ("activation-kmeans", RANDOM, ["ppl builtin:code", CLOZE], "better",
     "COLA's activation-diversity selection preserves capabilities (math, code) better than random (COLA; we "
     "run its selection stage only)"),
    ("self-calibration", RANDOM, None, "not worse", "self-calibration is consistently competitive with real data "
                                                    "(Williams et al.)"),
    (MIX, BEST_SOURCE, None, "better", "a uniform multi-source mix beats the best single source (IGSP: 58.8% vs "
                                       "50.0% retained, SparseGPT 60%)"),
    ("icl-format", RANDOM, None, "better", "in-context formatted task data helps broadly (Bandari et al.; ours is a "
                                           "synthetic stand-in for their task data)"),
]


def planned_comparisons(entries: set[str], capability: str, source: str) -> list[tuple[str, str]]:
    """(entry, what it is compared with) in one family: every entry against random (the pool source's draw);
    unique-tokens against least-ppl; the mix against the in-domain single source and the best single source."""
    singles = single_sources(entries, source)
    planned = [(entry, RANDOM) for entry in _entry_order(entries) if entry != RANDOM and RANDOM in entries]
    if {"unique-tokens", "least-ppl"} <= entries:
        planned.append(("unique-tokens", "least-ppl"))
    if MIX in entries and len(singles) > 1:
        if in_domain(capability, singles):
            planned.append((MIX, IN_DOMAIN))
        planned.append((MIX, BEST_SOURCE))
    return planned


def single_sources(entries: set[str], source: str) -> dict[str, str]:
    """source -> entry of every single-source random draw (the pool source's is `random`)."""
    found = {source: RANDOM} if RANDOM in entries else {}
    found.update({e: e for e in entries if e.startswith(("builtin:", "file:", "hf:"))})
    return found


def in_domain(capability: str, singles: dict[str, str]) -> str | None:
    """The entry drawn from the capability's own domain ('ppl builtin:code' -> the code draw), if any."""
    domain = capability.removeprefix("ppl ")
    return singles.get(domain) if capability.startswith("ppl ") else None


def comparisons(frame: pd.DataFrame, capability_names: list[str], source: str = "builtin:wiki") -> pd.DataFrame:
    """One row per (model, method, setting, capability, entry, against): the entry's mean, std and seeds, and for
    a comparison (against not empty) the paired per-seed difference with its family-wise interval, minimum
    detectable effect and verdict (equivalence.py). `against` is random, least-ppl, or for the mix the
    in-domain and the best single source (the one with the best mean in that cell, named in `baseline`)."""
    rows = []
    for (model, method, setting), cell in frame.groupby(["model", "method", "setting"], sort=False):
        for capability in capability_names:
            if capability not in cell:
                continue
            values = {entry: group.groupby("seed")[capability].mean().dropna()
                      for entry, group in cell.groupby("entry", sort=False)}
            base = dict(model=model, method=method, setting=setting, capability=capability)
            for entry in _entry_order(values):
                rows.append({**base, "entry": entry, "against": "", "baseline": "", "mean": values[entry].mean(),
                             "std": values[entry].std(ddof=1) if len(values[entry]) > 1 else 0.0,
                             "n": len(values[entry]), "verdict": "baseline" if entry == RANDOM else ""})
            planned = planned_comparisons(set(values), capability, source)
            singles = single_sources(set(values), source)
            better = max if higher_is_better(capability) else min
            for entry, against in planned:
                baseline = against
                if against == IN_DOMAIN:
                    baseline = in_domain(capability, singles)
                elif against == BEST_SOURCE:
                    baseline = better(singles.values(), key=lambda e: values[e].mean())
                a, b = values[entry], values[baseline]
                seeds = a.index.intersection(b.index)
                found = compare(differences(a[seeds], b[seeds], capability), capability, family=len(planned))
                rows.append({**base, "entry": entry, "against": against, "baseline": baseline, "mean": a.mean(),
                             "std": a.std(ddof=1) if len(a) > 1 else 0.0, "n": found.n, "diff": found.mean,
                             "low": found.low, "high": found.high, "sd_diff": found.sd, "mde": found.mde,
                             "verdict": found.verdict, "family": len(planned)})
    return pd.DataFrame(rows)


def _entry_order(entries) -> list[str]:
    known = [*STRATEGIES, MIX]
    return sorted(entries, key=lambda e: (known.index(e) if e in known else len(known), e))


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
    order = _entry_order(part["entry"].unique())
    table["_s"], table["_e"] = table["setting"].map(setting_sort_key), table["entry"].map(order.index)
    return table.sort_values(["_s", "_e"]).drop(columns=["_s", "_e"]).set_index(["setting", "entry"]).fillna(
        "").to_markdown()


def describe_row(row, capability: str) -> str:
    """A comparison row as 'Δ [low, high], MDE x: verdict' (vs its baseline when that is not in the column)."""
    from .equivalence import Comparison, describe

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


def published_claims(found: pd.DataFrame) -> list[str]:
    """Per published claim: supported, contradicted, mixed or not testable at this scale over its cells
    (equivalence.CLAIM_RULES), with the tally and where it was contradicted."""
    from .equivalence import CLAIM_KINDS, CONTRADICTED, cell_reading, claim_verdict

    lines = []
    for entry, against, capability_names, kind, claim in PUBLISHED:
        rows = found[(found["entry"] == entry) & (found["against"] == against)
                     & found["verdict"].isin(["better", "worse", "equivalent", "inconclusive"])]
        if capability_names:
            rows = rows[rows["capability"].isin(capability_names)]
        if rows.empty:
            lines.append(f"- **not measured**: {claim}.")
            continue
        verdict, tally = claim_verdict(list(rows["verdict"]), kind)
        counts = ", ".join(f"{n} {reading}" for reading, n in tally.items())
        against_what = "random" if against == RANDOM else against
        fails = [r for r in rows.itertuples() if cell_reading(r.verdict, kind) == CONTRADICTED]
        where = ("; contradicted at " + ", ".join(f"{r.model} {r.method} {r.setting} {r.capability} ({r.verdict})"
                                                  for r in fails[:6]) + (" ..." if len(fails) > 6 else "")) if fails else ""
        needs = "/".join(CLAIM_KINDS[kind]["supported"])
        relation = {"not worse": "not worse than", "better": "better than", "matches": "matches"}[kind]
        lines.append(f"- **{verdict}** ({relation} {against_what}: a cell supports it when {needs}; {len(rows)} cells: "
                     f"{counts}): {claim}{where}.")
    return lines


def _figure(found: pd.DataFrame, model: str, method: str):
    import plotly.express as px

    part = found[(found["model"] == model) & (found["method"] == method) & (found["against"] == "")]
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


PILOT_RUNS_FILE = "strategies-pilot-runs.csv"


def write_reread(runs_csv: str | Path) -> Path:
    """strategies-reread.md beside an earlier tournament's runs CSV: its rows compared as this protocol compares
    them (paired intervals, margins, minimum detectable effects, claims), at the scale they were run."""
    runs_csv = Path(runs_csv)
    frame = pd.read_csv(runs_csv)
    names = [c for c in frame.columns if c.startswith("ppl builtin:")] + ([CLOZE] if CLOZE in frame else [])
    found = comparisons(frame, names)
    compared = found[found["against"] != ""]
    tally = compared.pivot_table(index="entry", columns="verdict", values="n", aggfunc="count", fill_value=0)
    lines = [f"# The first tournament, re-read with paired intervals and equivalence margins", "",
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


def protocol_lines(settings: TournamentSettings) -> list[str]:
    """What is measured and how it is judged: written before the protocol's first run."""
    from .equivalence import CLAIM_RULES, MARGINS, MDE_TARGET

    lines = [
        "## Protocol", "",
        f"Fixed {PROTOCOL_DATE}, before any of its runs, from the pilot below.", "",
        f"- Entries: the strategies {', '.join(settings.strategies)} choosing from `{settings.source}`"
        + (f"; `mix`, the random draw from `{settings.mix}`" if settings.mix else "")
        + (f"; and the random draw from each of {', '.join(settings.extra_sources)} (every domain's single-source "
           f"baseline: `random` is {settings.source}'s)" if settings.extra_sources else "")
        + f". Every entry's windows are {settings.nsamples} x {settings.seqlen} tokens ({settings.mode} sampling for "
          f"the pool and the random draws; the pool strategies choose from {10 * settings.nsamples} candidates).",
        f"- Methods {', '.join(settings.methods)} at {', '.join(str(s) for s in settings.settings)}, in "
        f"{settings.resolved_dtype()} ({_dtype_origin(settings)}); seeds 0-{settings.seeds - 1} (a seed fixes the "
        f"pool, the draw and a strategy's own randomness; random's windows are the first of every pool of its seed).",
        f"- Capabilities, each its own column, never averaged: held-out perplexity on {', '.join(settings.eval)} "
        f"({settings.eval_windows} x {settings.seqlen} = {settings.eval_windows * settings.seqlen:,} tokens each, the "
        f"same for every run; lower is better)" + (
            f", and the 4-way cloze proxy ({settings.cloze_items} items per domain, accuracy averaged over the "
            f"domains; chance 0.25, higher is better)" if settings.cloze_items else "") + ".",
        "- Comparisons, paired by seed: every entry against random; unique-tokens against least-ppl (ZipCal's "
        "claim); the mix against the in-domain single source and against the best single source of the cell "
        "(chosen on the same runs, which favours the single source). A family is one model, method, setting and "
        "capability.",
        f"- Equivalence margins: {MARGINS['ppl'].describe()} ({MARGINS['ppl'].why}); {MARGINS['acc'].describe()} "
        f"({MARGINS['acc'].why}).",
        "- Verdicts: the per-seed difference (log perplexity; accuracy points) gets a 95% family-wise confidence "
        "interval (paired t, Bonferroni over the family's comparisons). **equivalent**: the interval inside the "
        "margin; **better** or **worse**: it excludes 0 and is not inside the margin; **inconclusive**: it holds 0 "
        "and crosses a margin. Every comparison states its minimum detectable effect (MDE): the true difference "
        "the same test finds with 80% power at the measured noise.",
        f"- Claims: {CLAIM_RULES}",
        f"- Power target: an MDE of at most {MDE_TARGET * 100:.0f}% on wiki perplexity for Wanda 50% on "
        f"{settings.models[0]}.", "",
        "Strategy settings (defaults of data/strategies.py unless listed):", "",
    ]
    for name in settings.strategies:
        if STRATEGIES[name].settings:
            described = ", ".join(f"{s.name} {s.default}" for s in STRATEGIES[name].settings)
            lines.append(f"- {name}: {described}")
    lines += ["- icl-format's tasks are synthetic stand-ins for Bandari et al.'s downstream datasets (offline: BBC "
              "News topics from the news corpus' calibration part, or worked arithmetic), never the cloze metric's "
              "items or format.",
              "", "Settings:", "", "```json", json.dumps(settings.as_dict(), indent=1), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in environment_versions().items() if v), ""]
    return lines


def pilot_lines(pilot: pd.DataFrame, settings: TournamentSettings) -> list[str]:
    """The pilot's seed-noise table and what it implies for the MDE at several seed counts."""
    from .equivalence import as_stated

    family = max(len(planned_comparisons(_protocol_entries(settings), c, settings.source))
                 for c in capabilities(settings))
    table = pilot_noise(pilot, family)
    shown = table.copy()
    for column in [c for c in shown.columns if c.startswith("MDE")] + ["seed sd"]:
        shown[column] = [as_stated(v, cap).lstrip("+") for v, cap in zip(shown[column], shown["capability"])]
    return ["## Pilot: seed noise at larger scales", "",
            "Random draws from builtin:wiki, Wanda 50% on the bundled model, each scale's runs on the same 32k "
            "evaluation tokens and 100 cloze items per domain (`python -m calib_core tournament --pilot`). `seed "
            "sd` is the standard deviation over seeds (of log perplexity, as percent; of accuracy, in points). The "
            "MDE columns are the minimum detectable effect of a paired comparison with that many seeds, at 80% "
            f"power and the protocol's family-wise level (Bonferroni over {family} comparisons), taking the two "
            "entries' seed noise as independent (sd of the difference = sqrt(2) x seed sd): an upper bound where "
            "pairing by seed correlates them. `median run minutes`: one run (choosing its windows, pruning, every "
            "evaluation) on the machine that ran the pilot, under whatever else it ran.", "",
            shown.to_markdown(index=False, floatfmt=".3f"), ""]


def _protocol_entries(settings: TournamentSettings) -> set[str]:
    return {*settings.strategies, *([MIX] if settings.mix else []), *settings.extra_sources}


PILOT_SEEDS = (5, 8, 10, 16)


def pilot_noise(pilot: pd.DataFrame, family: int) -> pd.DataFrame:
    """Per scale and capability: seeds, mean, seed sd (on the margin's scale) and the MDE at PILOT_SEEDS seeds."""
    import math

    from .equivalence import margin_of, minimum_detectable_effect

    rows = []
    columns = [c for c in pilot.columns if c.startswith("ppl builtin:") or c == CLOZE]
    for (nsamples, seqlen), group in pilot.groupby(["nsamples", "seqlen"], sort=True):
        for capability in columns:
            values = group[capability].dropna()
            if values.empty:
                continue
            scaled = values.map(math.log) if margin_of(capability).scale == "log" else values
            sd = float(scaled.std(ddof=1)) if len(scaled) > 1 else float("nan")
            seconds = group["run_seconds"].median() if "run_seconds" in group else float("nan")
            row = {"calibration": f"{nsamples} x {seqlen}", "capability": capability, "seeds": len(values),
                   "median run minutes": seconds / 60, "mean": float(values.mean()), "seed sd": sd}
            for n in PILOT_SEEDS:
                row[f"MDE {n} seeds"] = minimum_detectable_effect(math.sqrt(2) * sd, n, family)
            rows.append(row)
    return pd.DataFrame(rows)


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


def power_lines(found: pd.DataFrame) -> list[str]:
    """The median minimum detectable effect per capability, and how many comparisons could not tell."""
    from .equivalence import as_stated, margin_of

    compared = found[found["against"] != ""]
    if compared.empty:
        return []
    rows = []
    for capability, group in compared.groupby("capability", sort=False):
        rows.append({"capability": capability, "comparisons": len(group),
                     "median MDE": as_stated(group["mde"].median(), capability).lstrip("+"),
                     "margin": margin_of(capability).describe(),
                     "inconclusive": int((group["verdict"] == "inconclusive").sum())})
    return ["## What this scale can detect", "", pd.DataFrame(rows).to_markdown(index=False), ""]


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

