"""The tournament's protocol as its report states it before the first run, and the pilot that fixed it: the seed
noise of random draws at larger scales and the minimum detectable effects it implies."""

from __future__ import annotations

import json

import pandas as pd

from ..data.strategies import STRATEGIES
from ..provenance import environment_versions
from .tournament import CLOZE, MIX, PROTOCOL_CHOICE, PROTOCOL_DATE, TournamentSettings, capabilities
from .tournament_comparisons import planned_comparisons

PILOT_RUNS_FILE = "strategies-pilot-runs.csv"


def protocol_lines(settings: TournamentSettings) -> list[str]:
    """What is measured and how it is judged: written before the protocol's first run."""
    from ..experiments.equivalence import CLAIM_RULES, MARGINS, MDE_TARGET

    lines = [
        "## Protocol", "",
        f"Fixed {PROTOCOL_DATE}, before any of its runs, from the pilot below. {PROTOCOL_CHOICE}", "",
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
        "Strategy settings (defaults of data/strategies/ unless listed):", "",
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
    from ..experiments.equivalence import as_stated

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

    from ..experiments.equivalence import margin_of, minimum_detectable_effect

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


def _dtype_origin(settings: TournamentSettings) -> str:
    if settings.dtype != "auto":
        return "as set"
    if settings.earlier_dtype():
        return "the dtype of the earlier runs it continues"
    return "the native dtype of the machine that ran them"


