"""Sweep statistics, figures and the reproduction (tiny model, tiny settings: the machinery, not the science)."""

import math

import pandas as pd
import pytest

from calib_core.cli import main as cli_main
from calib_core.data.selfgen import GenerationConfig
from calib_core.data.sets import save_set
from calib_core.errors import ConfigError, NotEnoughDataError
from calib_core.experiments.stats import runs_frame, spread_by_setting, summarize, welch_test
from calib_core.experiments.sweep_figures import export, nsamples_band, seed_violins, source_bars, spread_chart
from calib_core.runs import RunStore
from calib_core.studies.reproduce import (
    PLAN_CHANGES,
    ReproSettings,
    ordered_points,
    report_caveats,
    reproduction_frame,
    run_reproduction,
)
from calib_core.studies.reproduce_report import write_report
from tests.conftest import PLOTLY_JS_MARKER
from tests.tiny import save_tiny_folder


def _frame(values: dict) -> pd.DataFrame:
    """{(source, setting): [per-seed ppl]} -> a runs frame like runs_frame's."""
    rows = [{"method": "wanda", "calibration": source, "setting": setting, "nsamples": 16, "seed": seed, "ppl": v}
            for (source, setting), vs in values.items() for seed, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_summary_spread_and_welch():
    frame = _frame({("a", "50%"): [10.0, 10.2, 9.8], ("b", "50%"): [12.0, 12.4, 11.6],
                    ("a", "2:4"): [30.0, 31.0, 29.0], ("b", "2:4"): [30.5, 29.5, 30.0]})
    stats = summarize(frame, ["calibration", "setting"])
    row = stats[(stats["calibration"] == "b") & (stats["setting"] == "50%")].iloc[0]
    assert row["mean"] == pytest.approx(12.0) and row["std"] == pytest.approx(0.4) and row["n"] == 3
    assert row["sem"] == pytest.approx(0.4 / math.sqrt(3))
    spread = spread_by_setting(frame)
    assert list(spread["setting"]) == ["50%", "2:4"]  # paper order, not alphabetical
    first = spread.iloc[0]
    assert (first["best"], first["worst"]) == ("a", "b") and first["spread"] == pytest.approx(2.0)
    accuracy = frame.assign(**{"cloze acc": 1 / frame["ppl"]})
    first_acc = spread_by_setting(accuracy, "cloze acc").iloc[0]
    assert (first_acc["best"], first_acc["worst"]) == ("a", "b")  # higher accuracy is better
    clear = welch_test(frame[frame["setting"] == "50%"], "a", "b")
    noise = welch_test(frame[frame["setting"] == "2:4"], "a", "b")
    assert clear.p < 0.01 < 0.5 < noise.p
    assert "differ at alpha" in clear.describe() and "do not differ" in noise.describe()
    with pytest.raises(NotEnoughDataError, match="at least 2 seeds"):
        welch_test(frame.iloc[:1], "a", "b")


def test_runs_frame_uses_finished_runs_and_geometric_mean():
    record = {"config": {"method": "wanda", "sparsity": 0.6, "pattern": "unstructured"},
              "calibration": {"nsamples": 8, "seed": 3}, "overall_sparsity": 0.6,
              "perplexity": [{"source": "builtin:wiki", "ppl": 10.0}, {"source": "builtin:news", "ppl": 40.0}]}
    runs = [{"id": 1, "status": "finished", "calibration": "builtin:wiki", "record": record},
            {"id": 2, "status": "failed", "calibration": "builtin:wiki", "record": None}]
    frame = runs_frame(runs)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["setting"], row["nsamples"], row["seed"]) == ("60%", 8, 3)
    assert row["ppl"] == pytest.approx(20.0)  # sqrt(10 * 40)
    assert row["ppl builtin:news"] == 40.0


def test_figures_and_export(tmp_path):
    frame = _frame({("a", "50%"): [10.0, 10.2], ("b", "50%"): [12.0, 12.4], ("a", "60%"): [20.0, 21.0],
                    ("b", "60%"): [25.0, 24.0]})
    frame = pd.concat([frame, pd.DataFrame([{"method": "magnitude", "calibration": "none", "setting": "50%",
                                             "nsamples": 0, "seed": 0, "ppl": 400.0}])])
    bars = source_bars(frame)
    assert len(bars.data) == 2 and list(bars.data[0].error_y.array) == pytest.approx([0.1414, 0.2828], rel=1e-3)
    assert any("magnitude 400" in a.text for a in bars.layout.annotations)  # named in the 50% panel title
    assert bars.layout.yaxis.range[0] > 5  # zoomed to the bars (10 .. 12.4), not from zero
    spread = spread_chart(frame)
    assert list(spread.data[0].x) == ["50%", "60%"]
    assert list(spread.data[0].y) == pytest.approx([100 * 2.1 / 10.1, 100 * 4.0 / 20.5])
    assert len(seed_violins(frame).data) == 2
    curve = pd.concat([frame, frame.assign(nsamples=4, ppl=frame["ppl"] * 1.1)])
    assert len(nsamples_band(curve).data) == 4  # band + line per source
    with pytest.raises(NotEnoughDataError, match="two or more sample counts"):
        nsamples_band(frame)
    html = export(bars, tmp_path / "bars.html")
    assert PLOTLY_JS_MARKER in html.read_text()  # plotly.js embedded: the page works offline
    with pytest.raises(ConfigError, match=".html or .png"):
        export(bars, tmp_path / "bars.svgz")


def _tiny_settings(folder) -> ReproSettings:
    return ReproSettings(model=str(folder), seeds=2, nsamples=2, seqlen=16, sources=["builtin:wiki", "builtin:news"],
                         settings=[0.5, "2:4"], nsamples_curve=[1, 2], eval=["builtin:wiki"], eval_windows=1,
                         similarity_texts=3, early_seeds=1, selfgen_name="tiny-selfgen",
                         selfgen=GenerationConfig(texts=6, max_new_tokens=40, batch_size=3, drop_fraction=0.0))


def test_points_are_shared_between_questions_and_early_seeds_come_first(tmp_path):
    settings = _tiny_settings(tmp_path)
    points = ordered_points(settings)
    # magnitude 2 + Q1 2x2x2 + Q4 3 sources x 3 methods x 2 seeds (no Q4 point shares Q1's 16-sample keys)
    # + Q2 nsamples 1 on wiki (n=2 shared with Q1) x 2 seeds + the eval check (Q1's 2x2x2 on 16 windows)
    assert len(points) == 2 + 8 + 18 + 2 + 8
    assert len({p.key for p in points}) == len(points)
    seeds = [p.seed for p in points if p.config.method != "magnitude"]
    assert seeds == sorted(seeds)  # seed 0 of every question before seed 1
    other = ReproSettings(**{**settings.__dict__, "seqlen": 32})
    assert not {p.key for p in points} & {p.key for p in ordered_points(other)}


def test_self_generated_points_are_drawn_as_the_papers_code_draws_them(tmp_path):
    settings = _tiny_settings(tmp_path)
    selfgen = {p.config.method: p.context for p in ordered_points(settings) if p.calibration == settings.selfgen_set}
    assert selfgen["wanda"]["mode"] == "concat" and selfgen["wanda"]["concat_separator"] == " "
    assert selfgen["dsnot"]["mode"] == selfgen["owl"]["mode"] == "document_pad"
    builtin = {p.context["mode"] for p in ordered_points(settings) if p.calibration in settings.sources}
    assert builtin == {"concat"}


def test_reproduction_runs_resumes_and_reports(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    settings = _tiny_settings(folder)
    store = RunStore(tmp_path / "runs.sqlite")
    first = run_reproduction(settings, store)
    assert first.failed == [] and first.ran == len(ordered_points(settings))
    assert run_reproduction(settings, store).ran == 0  # resumed: nothing left
    frame = reproduction_frame(settings, store)
    assert set(frame["method"]) == {"magnitude", "wanda", "dsnot", "owl"}
    assert set(frame["calibration"]) == {"none", "builtin:wiki", "builtin:news", "set:tiny-selfgen"}
    path = write_report(settings, store, tmp_path / "report", command="python -m calib_core reproduce --test")
    text = path.read_text()
    for heading in ("## Q1", "## Q2", "## Q3", "## Q4", "## Caveats", "## Findings"):
        assert heading in text
    assert "python -m calib_core reproduce --test" in text and "| transformers |" in text
    assert "Welch t =" in text and "Min-K%++" in text
    findings = text.split("## Findings")[1]
    verdicts = [line for line in findings.splitlines() if line.startswith("- **")]
    assert len(verdicts) >= 5  # magnitude (Q1), Q3, and one per Q4 method; Q2 needs 3 sample counts
    assert (tmp_path / "report" / "runs.csv").exists()
    assert "## Evaluation size: Q1 on 1 vs 16 windows per domain" in text
    assert "ranks identical" in text or "ranks differ" in text

    # A new store with the previous report's runs.csv: only changed points (DSnoT, the self-generated set,
    # here renamed) run again; the rest is carried over with its numbers.
    previous = pd.read_csv(tmp_path / "report" / "runs.csv")
    renamed = ReproSettings(**{**settings.__dict__, "selfgen_name": "tiny-selfgen-2"})
    fresh = RunStore(tmp_path / "fresh.sqlite")
    second = run_reproduction(renamed, fresh, previous=previous)
    made = reproduction_frame(renamed, fresh)
    assert second.failed == [] and second.ran == len(made)
    assert set(made["method"]) == {"dsnot", "wanda", "owl"}
    assert set(made.loc[made["method"] == "owl", "calibration"]) == {"set:tiny-selfgen-2"}
    assert set(made.loc[(made["method"] == "wanda") & (made["eval_windows"] == 1), "calibration"]) == {"set:tiny-selfgen-2"}
    path = write_report(renamed, fresh, tmp_path / "report2", previous=tmp_path / "report" / "runs.csv")
    text = path.read_text()
    assert "## What changed since the previous report" in text and "carried over unchanged" in text
    rows = pd.read_csv(tmp_path / "report2" / "runs.csv")
    carried = rows[rows["carried"]]
    assert len(carried) + len(made) == len(ordered_points(renamed))
    main = previous[previous["eval_windows"] == settings.eval_windows]
    old = main.set_index(["method", "setting", "calibration", "nsamples", "seed"])["ppl"]
    for row in carried.itertuples():
        assert row.ppl == old.loc[(row.method, row.setting, row.calibration, row.nsamples, row.seed)]


def test_report_caveats_name_plan_changes_and_a_self_generated_pool_smaller_than_a_draw():
    settings = ReproSettings(nsamples=16, seqlen=512, selfgen_name="small-pool")
    assert report_caveats(settings) == [f"- {change}" for change in PLAN_CHANGES]  # no set saved: no pool caveat
    save_set("small-pool", [{"text": "a generated text", "tokens": 100, "kept": True}] * 80
             + [{"text": "dropped", "tokens": 500, "kept": False}])
    pool = report_caveats(settings)[-1]
    assert "80 kept texts, about 8000 tokens" in pool and "16 x 512 = 8192" in pool
    few_samples = report_caveats(ReproSettings(nsamples=2, seqlen=512, selfgen_name="small-pool"))
    assert len(few_samples) == len(PLAN_CHANGES) + 1  # no small-pool caveat; the whole-text draw's stays
    assert "Only 0 of the 80 kept texts" in few_samples[-1] and "more than 509 tokens" in few_samples[-1]


def test_cli_reproduce_dry_run(tmp_path, capsys):
    assert cli_main(["reproduce", "--dry-run", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("points finished") and out.count("todo") > 50


def test_the_reproduction_takes_another_method_for_q1_q2_and_the_evaluation_check(capsys):
    settings = ReproSettings(method="ria")
    questions = settings.questions()
    for name in ("q1", "q2", "eval_check"):
        assert {p.config.method for p in questions[name]} == {"ria"}, name
    assert {p.config.method for p in questions["q4"]} == set(settings.selfgen_methods)  # the paper's own Q4 methods
    assert ReproSettings().grid().points()[0].key != settings.grid().points()[0].key
    assert cli_main(["reproduce", "--dry-run", "--seeds", "1", "--method", "ria"]) == 0
    assert " ria 0.5 on builtin:" in capsys.readouterr().out
