"""The reproduction's Q1 on the second bundled model: Wanda at 50% and 2:4 with each builtin calibration
source, 5 seeds, exactly the default model's Q1 settings (16 x 512 tokens, concat, the same 4 x 2 eval
windows), then the source ranking set against the default model's from docs/results/runs.csv.

    .venv/bin/python bench/second_model_q1.py                 # about 40 min on 2 CPUs; resumes
    .venv/bin/python bench/second_model_q1.py --report-only   # redraw from the finished runs

Writes docs/results/gemma3-270m.md and docs/results/gemma3-270m-runs.csv.
"""

from __future__ import annotations

import argparse
import time

from _common import ROOT  # first: it puts the repository on sys.path

MODEL = "gemma3-270m"
SETTINGS = [0.5, "2:4"]
REFERENCE = ROOT / "docs" / "results" / "runs.csv"
OUT = ROOT / "docs" / "results"


def main() -> None:
    import pandas as pd
    from scipy.stats import kendalltau

    from calib_core.experiments.stats import (
        PPL,
        setting_sort_key,
        spread_by_setting,
        summarize,
        sweep_frame,
        welch_test,
    )
    from calib_core.experiments.sweeps import run_sweep
    from calib_core.runs import RunStore
    from calib_core.studies.reproduce import ReproSettings, ensure_dense_reference

    parser = argparse.ArgumentParser()
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    settings = ReproSettings(model=MODEL, settings=SETTINGS, name=f"q1-{MODEL}")
    grid = settings.grid()
    store = RunStore()
    if not args.report_only:
        def on_event(event):
            if getattr(event, "kind", "") == "pipeline" and event.stage == "sweep":
                print(f"{time.strftime('%H:%M:%S')} {event.message}", flush=True)

        summary = run_sweep(grid, store, on_event)
        print(f"{summary.ran} ran, {summary.skipped} skipped, {len(summary.failed)} failed", flush=True)
    mine = sweep_frame(store, grid.name)
    reference = pd.read_csv(REFERENCE)
    reference = reference[(reference["method"] == "wanda") & reference["setting"].isin(["50%", "2:4"])
                          & (reference["nsamples"] == settings.nsamples) & (reference["eval_windows"] == settings.eval_windows)
                          & reference["calibration"].isin(settings.sources) & (reference["mode"] == settings.mode)]
    dense = ensure_dense_reference(settings, store)
    lines = [f"# Q1 on a second model: `{MODEL}` (Gemma 3 270M base)", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `.venv/bin/python "
             "bench/second_model_q1.py`. Does the calibration-source ranking found on `smollm2-135m` "
             "(README.md in this folder) hold on another architecture?", "",
             f"Settings, identical to the default model's Q1: Wanda, {settings.nsamples} x {settings.seqlen} tokens per "
             f"point ({settings.mode} sampling), seeds 0-{settings.seeds - 1}, `ppl` = geometric mean of the held-out "
             f"perplexities on {', '.join(settings.eval)} ({settings.eval_windows} x {settings.seqlen}-token windows "
             "each). The model is the Q4_K_M GGUF dequantised to fp32 (comparisons between sources are meaningful, "
             f"absolute perplexity is not the published number). Dense model: {dense['ppl']:.2f}.", ""]
    ranks, spreads = {}, {}
    order = sorted(mine["setting"].unique(), key=setting_sort_key)
    for name, frame in ((MODEL, mine), ("smollm2-135m", reference)):
        stats = summarize(frame, ["calibration", "setting"], PPL)
        stats["cell"] = [f"{r.mean:.2f} ± {r.std:.2f} ({r.n})" for r in stats.itertuples()]
        table = stats.pivot(index="calibration", columns="setting", values="cell")[order]
        lines += [f"## {name}: mean ± std (seeds) of `ppl`", "", table.to_markdown(), ""]
        spread = spread_by_setting(frame, PPL, "wanda")
        spreads[name] = dict(zip(spread["setting"], spread["relative spread"]))
        lines += [spread.to_markdown(index=False, floatfmt=".3f"), ""]
        for row in spread.itertuples():
            lines.append(f"- {row.setting}: {welch_test(frame[frame['setting'] == row.setting], row.best, row.worst).describe()}")
        lines.append("")
        ranks[name] = stats.pivot(index="calibration", columns="setting", values="mean")[order].rank().astype(int)
    lines += ["## Does the ranking hold?", "", "Rank of each source (1 = lowest perplexity) on each model:", ""]
    side = pd.concat({model: table for model, table in ranks.items()}, axis=1)
    side.columns = [f"{model} {setting}" for model, setting in side.columns]
    lines += [side.to_markdown(), ""]
    for setting in order:
        tau, p = kendalltau(ranks[MODEL][setting], ranks["smollm2-135m"].loc[ranks[MODEL].index, setting])
        same_best = ranks[MODEL][setting].idxmin() == ranks["smollm2-135m"][setting].idxmin()
        lines.append(f"- {setting}: Kendall tau {tau:.2f} (p {p:.2f}, 4 sources); best source "
                     f"{'the same' if same_best else 'different'} ({ranks[MODEL][setting].idxmin()} on {MODEL}, "
                     f"{ranks['smollm2-135m'][setting].idxmin()} on smollm2-135m); relative spread "
                     f"{spreads[MODEL][setting]:.1%} on {MODEL}, {spreads['smollm2-135m'][setting]:.1%} on smollm2-135m.")
    lines += ["", "With 4 sources a rank correlation cannot reach significance (the smallest possible p is 0.08); "
              "the Welch tests above say which best-vs-worst gaps are beyond seed noise on each model.", ""]
    (OUT / f"{MODEL}.md").write_text("\n".join(lines) + "\n")
    mine.to_csv(OUT / f"{MODEL}-runs.csv", index=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
