"""The reproduction's markdown report: tables, figures (PNG beside the markdown) and a verdict per
finding, computed from the finished runs with the criterion stated next to it."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import pandas as pd

from ..errors import MissingDependencyError, NotEnoughDataError
from ..experiments import sweep_figures
from ..experiments.stats import PPL, setting_label, setting_sort_key, spread_by_setting, summarize, welch_test
from ..provenance import environment_versions
from .reproduce import (
    CHANGES_SINCE_PREVIOUS,
    ReproSettings,
    carried_runs,
    ensure_dense_reference,
    ensure_similarity,
    ordered_points,
    report_caveats,
    reproduction_frame,
)

ALPHA = 0.05


def _cell(row) -> str:
    return f"{row['mean']:.2f} ± {row['std']:.2f} ({int(row['n'])})"


def _pivot(stats: pd.DataFrame, index: str, columns: str, order: list[str] | None = None) -> str:
    table = stats.assign(cell=stats.apply(_cell, axis=1)).pivot(index=index, columns=columns, values="cell")
    if order:
        table = table[[c for c in order if c in table.columns]]
    return table.fillna("–").to_markdown()


class _Report:
    def __init__(self, out: Path):
        self.out, self.lines, self.figure_errors = out, [], []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, name: str, build, caption: str) -> None:
        try:
            path = sweep_figures.export(build(), self.out / f"{name}.png")
            self.add(f"![{caption}]({path.name})", "")
        except (NotEnoughDataError, MissingDependencyError) as exc:
            self.figure_errors.append(f"{name}: {exc}")
            self.add(f"(figure {name} not drawn: {exc})", "")


def _key_values(mapping: dict) -> str:
    rows = [f"| {key} | `{json.dumps(value)}` |" for key, value in mapping.items()]
    return "\n".join(["| | |", "|---|---|", *rows])


def _verdict(ok: bool | None, text: str) -> str:
    mark = {True: "**reproduces**", False: "**does not reproduce**", None: "**inconclusive**"}[ok]
    return f"- {mark}: {text}"


def write_report(settings: ReproSettings, store, out: str | Path = "docs/results", command: str | None = None,
                 previous: str | Path | None = None) -> Path:
    """`previous`: the runs.csv of an earlier report, whose unchanged points are carried over."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = reproduction_frame(settings, store)
    previous_frame = pd.read_csv(previous) if previous else None
    frame = made.assign(carried=False) if not made.empty else made
    if previous_frame is not None:
        frame = pd.concat([frame, carried_runs(settings, previous_frame, made)], ignore_index=True)
    if frame.empty:
        raise NotEnoughDataError(f"No finished runs of reproduction '{settings.name}' yet: run it first.")
    everything, frame = frame, frame[frame["eval_windows"] == settings.eval_windows]
    report = _Report(out)
    findings: list[str] = []
    _header_section(report, settings, everything, command)
    wanda = frame[frame["method"] == settings.method]
    q1 = wanda[(wanda["nsamples"] == settings.nsamples) & wanda["calibration"].isin(settings.sources)]
    order = sorted(q1["setting"].unique(), key=setting_sort_key)
    _q1_section(report, settings, store, frame, q1, order, findings)
    _q2_section(report, settings, wanda, findings)
    _q3_section(report, settings, ensure_similarity(settings, store), q1, order, findings)
    _q4_section(report, settings, frame, findings)
    _eval_check_section(report, settings, everything, findings)
    if previous_frame is not None:
        _changes_section(report, settings, previous_frame, frame)
    report.add("## Caveats", "", *report_caveats(settings), "")
    report.add("## Findings", "", *findings, "",
               f"Compute: {_compute_seconds(settings, store) / 60:.0f} min of recorded calibration + pruning + "
               f"evaluation time over the {len(made)} runs made for this report"
               + (f" ({int(everything['carried'].sum())} more carried over)" if everything["carried"].any() else "")
               + ".", "")
    if report.figure_errors:
        report.add("Figures not drawn: " + "; ".join(report.figure_errors), "")
    path = out / "README.md"
    path.write_text("\n".join(report.lines) + "\n", encoding="utf-8")
    everything.to_csv(out / "runs.csv", index=False)
    return path


def _header_section(report: _Report, settings: ReproSettings, everything: pd.DataFrame, command: str | None) -> None:
    """Title, what is measured and how it differs from the paper, settings and versions."""
    import plotly
    import scipy

    points = ordered_points(settings)
    versions = environment_versions()
    versions.update(scipy=scipy.__version__, plotly=plotly.__version__)
    settings_table = {k: v for k, v in settings.as_dict().items() if k != "selfgen"}
    report.add(
        f"# Reproduction: calibration data for pruning (Ji et al., ICLR 2025) on `{settings.model}`", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the runs of"
        f" `{command or 'python -m calib_core reproduce'}` on {platform.machine()} CPU"
        f" ({len(everything)} of {len(points)} points finished; the command resumes, skipping finished points)."
        + (f" {int(everything['carried'].sum())} runs are carried over unchanged from the previous report's runs.csv "
           "(see 'What changed since the previous report')." if everything["carried"].any() else ""), "",
        "What is measured, and how it differs from the paper:",
        f"- Model: `{settings.model}` (the bundled SmolLM2-135M-Instruct, Q4_1 dequantised to fp32). The paper "
        "prunes 7B models.",
        f"- Calibration: {settings.nsamples} x {settings.seqlen} tokens per point, `{settings.mode}` sampling, "
        f"{settings.seeds} seeds (paper: 128 x 2048, 20 seeds). Chosen so the whole reproduction fits about two "
        "hours on 2 CPU cores; these settings were fixed before any result was seen.",
        f"- Metric: `ppl` = geometric mean of the held-out perplexities on {', '.join(settings.eval)} "
        f"({settings.eval_windows} x {settings.seqlen}-token windows each, the same windows for every run), lower is "
        "better. The paper reports zero-shot accuracy; perplexity differences are larger and not in points.",
        f"- Self-generated set `{settings.selfgen_set}`: {settings.selfgen.texts} texts from 2-token prefixes of wiki, "
        f"T {settings.selfgen.temperature}, top-p {settings.selfgen.top_p}, top-k {settings.selfgen.top_k}, "
        f"repetition penalty {settings.selfgen.repetition_penalty}, up to {settings.selfgen.max_new_tokens} new "
        f"tokens (the paper: 2048), highest-ppl {settings.selfgen.drop_fraction:.0%} dropped. Q4 draws it as the "
        "paper's code does for each method: " + "; ".join(
            f"{m}: `{mode}`" + (f" joined with {sep!r}" if mode == "concat" else "")
            for m, (mode, sep) in settings.selfgen_sampling.items()) + ".",
        "- Methods run as their authors' code does by default (DSnoT: the authors' swap rule, attention sublayers "
        "only, threshold 0.1 unscaled at 512 tokens; OWL: Wanda base, M 5, lambda 0.08).", "",
        "Settings:", "", _key_values(settings_table), "", "Versions:", "", _key_values(versions), "")


def _q1_section(report: _Report, settings: ReproSettings, store, frame: pd.DataFrame, q1: pd.DataFrame,
                order: list[str], findings: list[str]) -> None:
    """Spread across calibration sources (the reproduction's method, Wanda by default), against magnitude pruning."""
    magnitude = summarize(frame[frame["method"] == "magnitude"], ["setting"], PPL)
    report.add(f"## Q1: spread across calibration sources ({_title(settings.method)})", "",
               "Mean ± std (seeds) of `ppl`; magnitude pruning (no calibration data) as reference.", "")
    if not q1.empty:
        stats = summarize(q1, ["calibration", "setting"], PPL)
        report.add(_pivot(stats, "calibration", "setting", order), "")
        dense = ensure_dense_reference(settings, store)
        report.add(f"Dense (unpruned) model: {dense['ppl']:.2f}. Magnitude: "
                   + ", ".join(f"{r.setting} {r.mean:.1f}" for r in magnitude.itertuples()) + ".", "")
        spread = spread_by_setting(q1, PPL, settings.method)
        report.add(spread.to_markdown(index=False, floatfmt=".3f"), "")
        tests = []
        for row in spread[spread["sources"] >= 2].itertuples():
            try:
                result = welch_test(q1[q1["setting"] == row.setting], row.best, row.worst)
                tests.append(f"- {row.setting}: {result.describe(ALPHA)}")
            except NotEnoughDataError as exc:
                tests.append(f"- {row.setting}: {exc}")
        report.add("Best vs worst source, Welch t-test per setting:", "", *tests, "")
        report.figure("q1_sources", lambda: sweep_figures.source_bars(frame[frame["nsamples"].isin(
            [0, settings.nsamples])], settings.method), f"{_title(settings.method)} ppl by calibration source per setting")
        report.figure("q1_spread", lambda: sweep_figures.spread_chart(q1, settings.method), "spread vs sparsity")
        rel = dict(zip(spread["setting"], spread["relative spread"]))
        unstructured = [rel[s] for s in ("50%", "60%", "70%") if s in rel]
        if len(unstructured) == 3 and {"4:8", "2:4"} <= set(rel):
            grows = unstructured[0] < unstructured[1] < unstructured[2]
            nm = min(rel["4:8"], rel["2:4"]) > rel["50%"]
            findings.append(_verdict(grows and nm, "calibration data matters more as pruning gets harder "
                                     "(criterion: relative spread 50% < 60% < 70%, and 4:8, 2:4 > 50%): "
                                     + ", ".join(f"{k} {v:.1%}" for k, v in rel.items()) + "."))
        below = []
        for setting in order:
            if setting in set(magnitude["setting"]):
                reference = float(magnitude.loc[magnitude["setting"] == setting, "mean"].iloc[0])
                worse = stats[(stats["setting"] == setting) & (stats["mean"] > reference)]["calibration"].tolist()
                below += [f"{s} at {setting}" for s in worse]
        findings.append(_verdict(bool(below), "a bad calibration set can fall below magnitude pruning: "
                                 + (", ".join(below) if below else "no source is worse than magnitude at any "
                                    "setting (magnitude is far worse on this model)") + "."))


def _q2_section(report: _Report, settings: ReproSettings, wanda: pd.DataFrame, findings: list[str]) -> None:
    """Mean and std against the number of calibration samples."""
    report.add(f"## Q2: mean and std against the number of calibration samples ({_title(settings.method)} 50%)", "")
    curve = wanda[(wanda["setting"] == "50%") & wanda["calibration"].isin(settings.curve_sources)]
    if curve["nsamples"].nunique() >= 2:
        stats = summarize(curve, ["calibration", "nsamples"], PPL).sort_values(["calibration", "nsamples"])
        report.add(stats.to_markdown(index=False, floatfmt=".3f"), "")
        report.figure("q2_nsamples", lambda: sweep_figures.nsamples_band(curve, settings.method, "50%"),
                      "mean ± std vs calibration samples")
        for source, group in stats.groupby("calibration"):
            group = group[group["n"] >= 2]
            if len(group) < 3:
                continue
            first, last = group.iloc[0], group.iloc[-1]
            big = group[group["nsamples"] >= settings.nsamples]
            mean_change = (big["mean"].max() - big["mean"].min()) / big["mean"].min() if len(big) >= 2 else None
            rho = group["nsamples"].corr(group["std"], method="spearman")
            findings.append(_verdict(bool(last["std"] < first["std"] and rho < 0),
                                     f"more samples shrink the seed-to-seed std ({source}: std {first['std']:.3f} at "
                                     f"n={int(first['nsamples'])} -> {last['std']:.3f} at n={int(last['nsamples'])}; "
                                     f"Spearman(n, std) = {rho:.2f}; criterion: std at the largest n below the "
                                     "smallest n's, and a negative rank correlation)."))
            if mean_change is not None:
                findings.append(_verdict(bool(mean_change < 0.02),
                                         f"beyond a moderate amount, more samples barely move the mean ({source}: "
                                         f"means at n >= {settings.nsamples} differ by {mean_change:.1%}; criterion "
                                         f"< 2%). Over the whole curve the mean goes {first['mean']:.2f} -> "
                                         f"{last['mean']:.2f}."))
    else:
        report.add("Not enough sample counts finished yet.", "")


def _q3_section(report: _Report, settings: ReproSettings, similarity: dict | None, q1: pd.DataFrame,
                order: list[str], findings: list[str]) -> None:
    """The best source, and its similarity to pretraining data (Min-K%++)."""
    report.add("## Q3: which source is best, and its similarity to pretraining data (Min-K%++)", "")
    if similarity and not q1.empty:
        sim = pd.DataFrame([{"calibration": s, "Min-K%++ mean": v["min_k_pp_mean"], "Min-K%++ std": v["min_k_pp_std"],
                             "Min-K% mean": v["min_k_mean"], "dense ppl of texts": v["ppl_mean"],
                             "tokens scored per window": round(v["tokens_mean"]), "windows": int(v["min_k_pp_count"])}
                            for s, v in similarity.items()])
        means = summarize(q1, ["setting", "calibration"], PPL).pivot(index="calibration", columns="setting",
                                                                     values="mean")
        ranks = means.rank(axis=0).astype(int)
        ranks.columns = [f"rank {c}" for c in ranks.columns]
        table = sim.set_index("calibration").join(ranks[[f"rank {c}" for c in order]], how="left")
        report.add("Min-K%++ (K = 50%) of the dense model on up to "
                   f"{settings.similarity_texts} windows of {settings.seqlen} tokens per source, drawn as calibration draws them, "
                   "with the tokenizer's special tokens (higher = more training-like), and each source's "
                   f"rank by {_title(settings.method)} `ppl` per setting (1 = best):", "",
                   table.sort_values("Min-K%++ mean", ascending=False).to_markdown(floatfmt=".3f"), "")
        builtin = sim[sim["calibration"].isin(means.index)].set_index("calibration")["Min-K%++ mean"]
        rhos = {s: builtin.corr(means[s].loc[builtin.index], method="spearman") for s in order}
        most_similar = builtin.idxmax()
        best = {s: means[s].idxmin() for s in order}
        wins = sum(b == most_similar for b in best.values())
        report.add("Spearman correlation between a source's Min-K%++ and its pruned `ppl` (negative = more "
                   "training-like prunes better): " + ", ".join(f"{s} {r:.2f}" for s, r in rhos.items()), "")
        findings.append(_verdict(wins > len(order) / 2 and sum(r < 0 for r in rhos.values()) > len(order) / 2,
                                 f"the most training-like builtin source ({most_similar}) prunes best at {wins} of "
                                 f"{len(order)} settings (best: " + ", ".join(f"{s} {b}" for s, b in best.items())
                                 + f"); Min-K%++ vs ppl correlation is negative at {sum(r < 0 for r in rhos.values())} "
                                 f"of {len(order)} settings (criterion: both in a majority). With "
                                 f"{len(builtin)} sources a rank correlation is weak evidence."))
    else:
        report.add("Similarity scores or Q1 runs missing.", "")


def _q4_section(report: _Report, settings: ReproSettings, frame: pd.DataFrame, findings: list[str]) -> None:
    """Self-generated calibration data against the builtin sources, per method."""
    report.add(f"## Q4: self-generated calibration data (at {setting_label({'sparsity': settings.selfgen_setting})})", "")
    q4_setting = setting_label({"sparsity": settings.selfgen_setting})
    q4 = frame[(frame["setting"] == q4_setting) & (frame["nsamples"] == settings.nsamples)
               & frame["method"].isin(settings.selfgen_methods)]
    if not q4.empty:
        stats = summarize(q4, ["calibration", "method"], PPL)
        report.add(_pivot(stats, "calibration", "method", settings.selfgen_methods), "")
        for method in settings.selfgen_methods:
            data = q4[q4["method"] == method]
            means = data.groupby("calibration")[PPL].mean()
            if settings.selfgen_set not in means or len(means) < 2:
                continue
            builtin = means.drop(settings.selfgen_set)
            best = builtin.idxmin()
            try:
                test = welch_test(data, settings.selfgen_set, best)
                detail = test.describe(ALPHA)
                beyond_noise = test.p < ALPHA
            except NotEnoughDataError as exc:
                detail, beyond_noise = str(exc), False
            beats_best = means[settings.selfgen_set] < builtin.min()
            beats_mean = means[settings.selfgen_set] < builtin.mean()
            verdict = True if beats_best and beyond_noise else (None if beats_mean else False)
            findings.append(_verdict(verdict, f"self-generated data improves {method}: self-gen {means[settings.selfgen_set]:.2f} "
                                              f"vs best builtin {best} {builtin.min():.2f} and builtin average "
                                              f"{builtin.mean():.2f}. {detail} (criterion: beats the best builtin "
                                              "source beyond noise; inconclusive if it only beats their average)."))
            report.figure(f"q4_{method}", lambda d=data, m=method: sweep_figures.seed_violins(d, m, q4_setting),
                          f"{method} per-seed ppl by source")
    else:
        report.add("No Q4 runs finished yet.", "")


def _compute_seconds(settings: ReproSettings, store) -> float:
    """Recorded calibration + pruning + evaluation time of the reproduction's finished runs."""
    seconds = 0.0
    for run in store.sweep_runs(settings.name, "finished"):
        seconds += sum(v for k, v in (run["record"] or {}).get("timings", {}).items() if k in (
            "calibration", "prune_total", "eval"))
    return seconds


def _source_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    means = summarize(frame, ["setting", "calibration"], PPL).pivot(index="calibration", columns="setting", values="mean")
    return means.rank(axis=0).astype(int)


def _eval_check_section(report: _Report, settings: ReproSettings, everything: pd.DataFrame, findings: list) -> None:
    """Q1 at a few settings on the main eval and on more windows, side by side: ranks and verdicts."""
    small, big = settings.eval_windows, settings.eval_check_windows
    labels = [setting_label({"pattern": s} if isinstance(s, str) else {"sparsity": s}) for s in settings.eval_check_settings]
    wanda = everything[(everything["method"] == settings.method) & (everything["nsamples"] == settings.nsamples)
                       & everything["calibration"].isin(settings.sources) & everything["setting"].isin(labels)]
    report.add(f"## Evaluation size: Q1 on {small} vs {big} windows per domain", "",
               f"The same {_title(settings.method)} points ({', '.join(labels)}; {len(settings.sources)} sources, {settings.seeds} seeds) "
               f"evaluated on {small} and on {big} held-out windows of {settings.seqlen} tokens per domain.", "")
    parts = {n: wanda[wanda["eval_windows"] == n] for n in (small, big)}
    if parts[big].empty or parts[small].empty:
        report.add("Not run yet.", "")
        return
    seeds = {n: int(part.groupby(["setting", "calibration"])["seed"].nunique().min()) for n, part in parts.items()}
    if seeds[big] < settings.seeds:
        report.add(f"So far {seeds[big]} of {settings.seeds} seeds ran on {big} windows (at least {seeds[small]} on "
                   f"{small}); the command resumes the rest.", "")
    rows, same_everywhere = [], True
    for label in labels:
        tests = {}
        for n, part in parts.items():
            data = part[part["setting"] == label]
            ranks = _source_ranks(data)[label] if not data.empty else None
            spread = spread_by_setting(data, PPL, settings.method).iloc[0] if not data.empty else None
            try:
                test = welch_test(data, spread["best"], spread["worst"])
                verdict = "beyond noise" if test.p < ALPHA else "within noise"
                tests[n] = (ranks, verdict, f"{spread['best']} vs {spread['worst']}: p = {test.p:.3g}")
            except (NotEnoughDataError, TypeError, KeyError) as exc:
                tests[n] = (ranks, None, str(exc))
        (ranks_a, verdict_a, text_a), (ranks_b, verdict_b, text_b) = tests[small], tests[big]
        same = ranks_a is not None and ranks_b is not None and ranks_a.to_dict() == ranks_b.to_dict()
        same_everywhere &= same and verdict_a == verdict_b
        for source in settings.sources:
            rows.append({"setting": label, "source": source,
                         f"rank ({small} windows)": None if ranks_a is None else ranks_a.get(source),
                         f"rank ({big} windows)": None if ranks_b is None else ranks_b.get(source)})
        report.add(f"- {label}: best vs worst, {small} windows: {text_a} ({verdict_a}); {big} windows: {text_b} "
                   f"({verdict_b}); ranks {'identical' if same else 'differ'}.")
    report.add("", pd.DataFrame(rows).to_markdown(index=False), "")
    findings.append(f"- **evaluation size**: Q1's source ranks and best-vs-worst verdicts at {', '.join(labels)} are "
                    + ("the same" if same_everywhere else "not all the same")
                    + f" on {small} and {big} windows per domain ({seeds[small]} and {seeds[big]} seeds; details in "
                    "the section above).")


def _changes_section(report: _Report, settings: ReproSettings, previous: pd.DataFrame, frame: pd.DataFrame) -> None:
    """What differs from the previous report, and Q4 before and after."""
    report.add("## What changed since the previous report", "", *[f"- {c}" for c in CHANGES_SINCE_PREVIOUS], "")
    q4_setting = setting_label({"sparsity": settings.selfgen_setting})
    old = previous[(previous["setting"] == q4_setting) & previous["method"].isin(settings.selfgen_methods)
                   & (previous["nsamples"] == settings.nsamples)]
    new = frame[(frame["setting"] == q4_setting) & frame["method"].isin(settings.selfgen_methods)
                & (frame["nsamples"] == settings.nsamples)]
    if old.empty or new.empty:
        return
    rename = lambda c: "self-generated" if c.startswith("set:") else c  # noqa: E731
    old_means = old.assign(calibration=old["calibration"].map(rename)).groupby(["calibration", "method"])[PPL].mean()
    new_means = new.assign(calibration=new["calibration"].map(rename)).groupby(["calibration", "method"])[PPL].mean()
    table = pd.DataFrame({"previous": old_means, "now": new_means}).reset_index()
    table["previous"] = table["previous"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    table["now"] = table["now"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    report.add(f"Q4 mean `ppl` at {q4_setting}, previous report vs now (unchanged points are carried over, so "
               "their numbers are equal):", "", table.pivot(index="calibration", columns="method",
                                                              values=["previous", "now"]).to_markdown(), "")
    for method in settings.selfgen_methods:
        lines = []
        for when, means in (("previous", old_means), ("now", new_means)):
            if method not in means.index.get_level_values("method"):
                continue
            by_source = means.xs(method, level="method")
            if "self-generated" not in by_source or len(by_source) < 2:
                lines.append(f"{when}: no self-generated result")
                continue
            builtin = by_source.drop("self-generated")
            beats = by_source["self-generated"] < builtin.min()
            lines.append(f"{when}: self-generated {by_source['self-generated']:.2f} vs best builtin "
                         f"{builtin.idxmin()} {builtin.min():.2f}, {'lower' if beats else 'not lower'}")
        report.add(f"- Does self-generated data beat every builtin source for {method}? " + "; ".join(lines) + ".")
    report.add("")


def _title(method: str) -> str:
    """A method's name in prose: the paper's spelling for the paper's Wanda, the registry's otherwise."""
    return "Wanda" if method == "wanda" else f"`{method}`"
