"""The tournament's comparisons: which entries are compared with which in a family (every entry with random,
unique-tokens with least-ppl, the mix with the in-domain and the best single source), their paired verdicts
(equivalence.py), and the published claims those verdicts support, contradict or leave untested."""

from __future__ import annotations

import pandas as pd

from ..data.strategies import RANDOM, STRATEGIES
from ..experiments.equivalence import compare, differences
from ..experiments.stats import higher_is_better
from .tournament import CLOZE, MIX

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
    planned = [(entry, RANDOM) for entry in entry_order(entries) if entry != RANDOM and RANDOM in entries]
    if {"unique-tokens", "least-ppl"} <= entries:
        planned.append(("unique-tokens", "least-ppl"))
    if MIX in entries and len(singles) > 1:
        if in_domain(capability, singles):
            planned.append((MIX, IN_DOMAIN))
        planned.append((MIX, BEST_SOURCE))
    return planned


def single_sources(entries: set[str], source: str) -> dict[str, str]:
    """source -> entry of every single-source random draw (the pool source's is `random`; an entry that is
    neither a strategy nor the mix is a source's draw: tournament.entry_of)."""
    found = {source: RANDOM} if RANDOM in entries else {}
    found.update({e: e for e in entries if e not in STRATEGIES and e != MIX})
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
            for entry in entry_order(values):
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


def entry_order(entries) -> list[str]:
    known = [*STRATEGIES, MIX]
    return sorted(entries, key=lambda e: (known.index(e) if e in known else len(known), e))


def published_claims(found: pd.DataFrame) -> list[str]:
    """Per published claim: supported, contradicted, mixed or not testable at this scale over its cells
    (equivalence.CLAIM_RULES), with the tally and where it was contradicted."""
    from ..experiments.equivalence import CLAIM_KINDS, CONTRADICTED, cell_reading, claim_verdict

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


def power_lines(found: pd.DataFrame) -> list[str]:
    """The median minimum detectable effect per capability, and how many comparisons could not tell."""
    from ..experiments.equivalence import as_stated, margin_of

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


