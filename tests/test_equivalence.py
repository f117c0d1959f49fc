"""The tournament's inference (experiments/equivalence.py and the report's comparisons): paired intervals,
equivalence margins, minimum detectable effects, and claims that non-significance never supports."""

import math

import numpy as np
import pandas as pd
import pytest

from calib_core.experiments.equivalence import (
    CONTRADICTED,
    MIXED,
    NOT_TESTABLE,
    SUPPORTED,
    claim_verdict,
    compare,
    differences,
    minimum_detectable_effect,
    verdict_of,
)
from calib_core.studies.tournament import CLOZE
from calib_core.studies.tournament_comparisons import comparisons, published_claims

SEEDS = 8


def _table(effects: dict[str, tuple[float, float]], capability: str = "ppl builtin:wiki", seed: int = 0,
           symmetric: bool = False) -> pd.DataFrame:
    """Runs of random and each entry over SEEDS seeds: entry = random x (1 + effect) x noise (perplexity) or
    random + effect + noise (accuracy), noise of the given sd per seed, independent of random's own seed noise;
    `symmetric`: the noise is +-sd in a seeded order, so the mean difference is exactly the effect."""
    rng = np.random.default_rng(seed)
    base = 20 * np.exp(rng.normal(0, 0.1, SEEDS)) if "ppl" in capability else 0.6 + rng.normal(0, 0.03, SEEDS)
    rows = [dict(model="m", method="wanda", setting="50%", entry="random", seed=s, **{capability: base[s]})
            for s in range(SEEDS)]
    for entry, (effect, noise) in effects.items():
        jitter = rng.permutation([noise, -noise] * (SEEDS // 2)) if symmetric else rng.normal(0, noise, SEEDS)
        values = base * (1 + effect) * np.exp(jitter) if "ppl" in capability else base + effect + jitter
        rows += [dict(model="m", method="wanda", setting="50%", entry=entry, seed=s, **{capability: values[s]})
                 for s in range(SEEDS)]
    return pd.DataFrame(rows)


def _verdicts(found: pd.DataFrame, against: str = "random") -> dict[str, str]:
    return found[found["against"] == against].set_index("entry")["verdict"].to_dict()


def test_each_of_the_four_verdicts_comes_out_of_a_table_made_for_it():
    effects = {"least-ppl": (-0.20, 0.01), "unique-tokens": (0.20, 0.01), "activation-kmeans": (0.0, 0.001),
               "self-calibration": (0.0, 0.2)}
    found = _verdicts(comparisons(_table(effects), ["ppl builtin:wiki"]))
    assert found == {"least-ppl": "better", "unique-tokens": "worse", "activation-kmeans": "equivalent",
                     "self-calibration": "inconclusive"}
    accuracy = {"least-ppl": (0.10, 0.005), "unique-tokens": (-0.10, 0.005), "activation-kmeans": (0.0, 0.001),
                "self-calibration": (0.0, 0.1)}
    found = _verdicts(comparisons(_table(accuracy, CLOZE), [CLOZE]))
    assert found == {"least-ppl": "better", "unique-tokens": "worse", "activation-kmeans": "equivalent",
                     "self-calibration": "inconclusive"}


def test_a_difference_smaller_than_the_margin_is_equivalent_even_when_significant():
    assert verdict_of(0.001, 0.01, math.log(1.02), higher_better=False) == "equivalent"
    assert verdict_of(0.001, 0.03, math.log(1.02), higher_better=False) == "worse"
    assert verdict_of(-0.03, 0.01, math.log(1.02), higher_better=False) == "inconclusive"
    assert verdict_of(0.001, 0.03, 0.02, higher_better=True) == "better"


def test_the_interval_is_the_paired_t_interval_at_the_family_wise_level():
    from scipy import stats

    rng = np.random.default_rng(3)
    diffs = rng.normal(0.01, 0.02, 10)
    found = compare(diffs, "ppl builtin:wiki", family=6)
    reference = stats.t.interval(1 - 0.05 / 6, 9, loc=diffs.mean(), scale=diffs.std(ddof=1) / math.sqrt(10))
    assert (found.low, found.high) == pytest.approx(reference)
    assert found.level == pytest.approx(1 - 0.05 / 6) and found.n == 10
    same = compare([0.725 - 0.7, 0.7250000000000001 - 0.7], CLOZE)  # identical differences: no interval can be formed, no verdict
    assert same.verdict == "inconclusive" and math.isnan(same.low) and math.isnan(same.mde)
    assert differences([10.0, 20.0], [5.0, 20.0], "ppl x").tolist() == pytest.approx([math.log(2), 0.0])
    assert differences([0.7, 0.5], [0.6, 0.5], CLOZE).tolist() == pytest.approx([0.1, 0.0])


def test_the_minimum_detectable_effect_is_found_with_80_percent_power():
    from scipy import stats

    sd, n, family = 0.05, 10, 4
    mde = minimum_detectable_effect(sd, n, family)
    rng = np.random.default_rng(0)
    samples = rng.normal(mde, sd, (4000, n))
    found = np.mean([stats.ttest_1samp(row, 0.0).pvalue < 0.05 / family for row in samples])
    assert found == pytest.approx(0.8, abs=0.025)
    assert minimum_detectable_effect(sd, 20, family) < mde  # more seeds, smaller effects
    assert math.isnan(minimum_detectable_effect(sd, 1))


def test_nothing_significant_never_supports_a_claim():
    noisy = {"least-ppl": (0.0, 0.3), "self-calibration": (0.0, 0.3), "unique-tokens": (0.0, 0.3)}
    frames = [_table(noisy, capability, seed=seed, symmetric=True) for seed in range(3)
              for capability in ("ppl builtin:wiki", "ppl builtin:news")]
    found = pd.concat([comparisons(f.assign(setting=f"{i}"), [c for c in f.columns if c.startswith("ppl")])
                       for i, f in enumerate(frames)])
    assert set(found.loc[found["against"] != "", "verdict"]) == {"inconclusive"}
    claims = "\n".join(published_claims(found))
    assert "**supported**" not in claims and "**not testable at this scale**" in claims
    assert "holds" not in claims


def test_claims_over_cells():
    assert claim_verdict(["equivalent"] * 6 + ["inconclusive"] * 4, "not worse")[0] == SUPPORTED
    assert claim_verdict(["better"] * 3 + ["inconclusive"] * 7, "better")[0] == NOT_TESTABLE
    assert claim_verdict(["equivalent"] * 6 + ["worse"] * 4, "better")[0] == CONTRADICTED
    assert claim_verdict(["better"] * 5 + ["worse"] * 5, "not worse")[0] == MIXED
    assert claim_verdict(["better"] * 6 + ["inconclusive"] * 4, "matches") == (
        CONTRADICTED, {SUPPORTED: 0, CONTRADICTED: 6, NOT_TESTABLE: 4})
    assert claim_verdict([], "better")[0] == NOT_TESTABLE


def test_the_mix_is_compared_with_the_in_domain_and_the_best_single_source():
    effects = {"mix": (-0.05, 0.005), "builtin:code": (-0.10, 0.005), "builtin:news": (0.0, 0.005)}
    table = _table(effects, "ppl builtin:code")
    found = comparisons(table, ["ppl builtin:code"])
    mix = found[found["entry"] == "mix"].set_index("against")
    assert mix.loc["random", "verdict"] == "better"
    assert mix.loc["in-domain source", "baseline"] == "builtin:code"
    assert mix.loc["in-domain source", "verdict"] == "worse"  # the code draw beats the mix on code
    assert mix.loc["best single source", "baseline"] == "builtin:code"
    assert set(found["family"].dropna()) == {5}  # 3 against random, 2 for the mix


def test_unique_tokens_is_compared_with_least_ppl_itself():
    table = _table({"least-ppl": (-0.10, 0.005), "unique-tokens": (-0.10, 0.002)})
    found = comparisons(table, ["ppl builtin:wiki"])
    direct = found[(found["entry"] == "unique-tokens") & (found["against"] == "least-ppl")]
    assert len(direct) == 1 and direct["verdict"].iloc[0] == "equivalent"
    claims = "\n".join(published_claims(found))
    assert "**supported** (matches least-ppl" in claims


def test_the_pilot_table_states_seed_noise_and_the_mde_it_implies():
    from calib_core.experiments.equivalence import minimum_detectable_effect
    from calib_core.studies.tournament_protocol import PILOT_SEEDS, pilot_noise

    rng = np.random.default_rng(0)
    rows = []
    for nsamples, sd in ((32, 0.04), (128, 0.02)):
        for seed, noise in enumerate(rng.normal(0, sd, 8)):
            rows.append({"nsamples": nsamples, "seqlen": 512, "seed": seed, "ppl builtin:wiki": 30 * math.exp(noise),
                         CLOZE: 0.6 + noise})
    table = pilot_noise(pd.DataFrame(rows), family=12).set_index(["calibration", "capability"])
    wiki = table.loc[("32 x 512", "ppl builtin:wiki")]
    logs = [math.log(r["ppl builtin:wiki"]) for r in rows if r["nsamples"] == 32]
    assert wiki["seeds"] == 8 and wiki["seed sd"] == pytest.approx(np.std(logs, ddof=1))
    assert wiki["MDE 10 seeds"] == pytest.approx(minimum_detectable_effect(math.sqrt(2) * wiki["seed sd"], 10, 12))
    assert list(wiki[[f"MDE {n} seeds" for n in PILOT_SEEDS]]) == sorted(wiki[[f"MDE {n} seeds" for n in PILOT_SEEDS]],
                                                                          reverse=True)
    assert table.loc[("128 x 512", "ppl builtin:wiki"), "seed sd"] < wiki["seed sd"]


def test_the_report_states_its_protocol_and_pilot_before_any_run(tmp_path):
    from calib_core.runs import RunStore
    from calib_core.studies.tournament import TournamentSettings
    from calib_core.studies.tournament_protocol import PILOT_RUNS_FILE
    from calib_core.studies.tournament_report import write_tournament_report

    pilot = pd.DataFrame([{"nsamples": 32, "seqlen": 512, "seed": s, "ppl builtin:wiki": 30 + s, CLOZE: 0.6}
                          for s in range(8)])
    pilot.to_csv(tmp_path / PILOT_RUNS_FILE, index=False)
    report = write_tournament_report(TournamentSettings(), RunStore(tmp_path / "runs.sqlite"), tmp_path,
                                     earlier="strategies-2026-12-03/strategies.md").read_text()
    assert "0 of 1200 points finished" in report and "Fixed 2026-12-07, before any of its runs" in report
    assert "±2% perplexity" in report and "±2 accuracy points" in report
    assert "## Pilot: seed noise at larger scales" in report and "| 32 x 512" in report
    assert "No point of this protocol has finished yet." in report
    assert "(strategies-2026-12-03/strategies.md)" in report
