"""The advisor's validation (docs/results/advisor.md): how well each proxy's ranking of candidate calibration
sets agrees with the ranking that pruning with each of them measured, per model, method, setting and
target, with bootstrap intervals over seeds, and at what cost against pruning with every candidate.

The measured side is the strategy tournament's runs (a TournamentSettings with the validation's candidates,
methods and seeds: its points are the tournament's where they match, so those runs are reused). The
predicted side recomputes each candidate's windows exactly as its runs drew them (same source, strategy,
seed, nsamples x seqlen, sampling mode) and the proxies of advisor.py on them; each (model, entry, seed)
is computed once and kept in a CSV, so the validation resumes."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.sources import BUILTIN_SOURCES
from .advisor import PROXIES, TARGET_SEED_OFFSET
from .stats import setting_label
from .tournament import CLOZE, UNIFORM_MIX, TournamentSettings, entry_of

CLOZE_TARGET = "cloze"
CLOZE_TEXT = UNIFORM_MIX  # the cloze items come from the four builtin domains: their mix stands for them
MASK_PROXY = "predicted_jaccard"  # the one proxy that depends on the method and setting


@dataclass
class ValidationSettings:
    tournament: TournamentSettings = field(default_factory=lambda: TournamentSettings(
        seeds=3, early_seeds=3, methods=["wanda", "sparsegpt", "owl"],
        extra_sources=["builtin:news", "builtin:books", "builtin:code"]))
    targets: list[str] = field(default_factory=lambda: [*BUILTIN_SOURCES, CLOZE_TARGET])
    target_windows: int = 8
    bootstrap: int = 1000

    def target_text(self, target: str) -> str:
        return CLOZE_TEXT if target == CLOZE_TARGET else target

    def capability(self, target: str) -> str:
        return CLOZE if target == CLOZE_TARGET else f"ppl {target}"


def candidate_points(settings: ValidationSettings, model: str) -> dict[tuple[str, int], object]:
    """(entry, seed) -> one of its points (every method and setting of an entry and seed share its windows)."""
    source = settings.tournament.source
    out = {}
    for point in settings.tournament.points(model):
        out.setdefault((entry_of(point.calibration, point.strategy, source), point.seed), point)
    return out


def proxy_rows(settings: ValidationSettings, model: str, wanted: set, on_event=None) -> list[dict]:
    """The proxies of the (entry, seed) pairs in `wanted` for `model`: one row per (entry, seed, target, proxy,
    method, setting), method and setting empty for the proxies that do not depend on them, with the seconds
    the entry took (`seconds`: making its windows again and its proxies) and of those the seconds its windows
    took (`selection_seconds`: a set a user advises on is made once either way). Each candidate is scored once (its forward serves every target), the targets'
    masks are computed once per setting."""
    from ..data.sources import build_calibration
    from ..data.strategies import build_strategy_calibration
    from ..metrics.proxies import dense_channel_norms, norm_divergence, packed_jaccard, packed_masks
    from ..metrics.similarity import build_reference, js_divergence, ngram_overlap, similarity_table, words
    from ..models import load_model
    from ..prune import PruneConfig
    from .advisor import _windows

    emit = on_event or (lambda message: None)
    todo = {key: p for key, p in candidate_points(settings, model).items() if key in wanted}
    if not todo:
        return []
    tour = settings.tournament
    loaded = load_model(model, dtype=tour.resolved_dtype())
    model_, tokenizer = loaded.model, loaded.tokenizer
    configs = [PruneConfig(method=m, **({"pattern": s} if isinstance(s, str) else {"sparsity": float(s)})).resolved()
               for m in tour.methods for s in tour.settings]
    targets = {}
    for target in settings.targets:
        emit(f"target {target}")
        text = settings.target_text(target)
        windows = build_calibration(text, tokenizer, settings.target_windows, tour.seqlen, TARGET_SEED_OFFSET,
                                    tour.mode)
        norms = dense_channel_norms(model_, windows.input_ids, windows.unpadded_lengths)
        targets[target] = (norms, build_reference(text), [packed_masks(model_, norms, c) for c in configs])
    rows = []
    for number, ((entry, seed), point) in enumerate(todo.items(), 1):
        emit(f"proxies {number}/{len(todo)}: {model} {entry} seed {seed}")
        started = time.perf_counter()
        chosen = build_strategy_calibration(point.calibration, tokenizer, point.nsamples, tour.seqlen, seed, tour.mode,
                                            point.strategy, dict(point.strategy_options), model=model_)
        selected = time.perf_counter()
        norms = dense_channel_norms(model_, chosen.input_ids, chosen.unpadded_lengths)
        masks = [packed_masks(model_, norms, c) for c in configs]
        scores, _ = similarity_table(model_, tokenizer, {entry: _windows(chosen)}, None, max_tokens=tour.seqlen,
                                     window=tour.seqlen)
        texts = list(scores["text"])
        base = {"model": model, "entry": entry, "seed": seed}
        entry_rows = []
        for target, (target_norms, reference, target_masks) in targets.items():
            values = {"norm_divergence": norm_divergence(norms, target_norms),
                      "ngram_overlap": float(np.mean([ngram_overlap(t, reference) for t in texts])),
                      "js_divergence": float(np.mean([js_divergence(Counter(words(t)), reference.unigrams)
                                                      for t in texts])),
                      "min_k_pp": float(scores["min_k_pp"].mean()), "calib_ppl": float(scores["ppl"].mean())}
            entry_rows += [{**base, "target": target, "proxy": name, "method": "", "setting": "", "value": value}
                           for name, value in values.items()]
            for config, own, theirs in zip(configs, masks, target_masks):
                entry_rows.append({**base, "target": target, "proxy": MASK_PROXY, "method": config.method,
                                   "setting": setting_label(config.as_dict()), "value": packed_jaccard(own, theirs)})
        seconds = time.perf_counter() - started
        rows += [{**row, "seconds": seconds, "selection_seconds": selected - started} for row in entry_rows]
    return rows


def _goodness(values: pd.Series, higher_is_better: bool) -> pd.Series:
    return values if higher_is_better else -values


def agreement(proxies: pd.DataFrame, measured: pd.DataFrame, settings: ValidationSettings, seed: int = 0) -> pd.DataFrame:
    """Spearman's rho and Kendall's tau between each proxy's ranking of the entries (its mean over seeds, in
    its direction) and the measured ranking (the capability's mean over seeds), per model, method, setting,
    target and proxy, with 95% intervals from bootstrap resamples of the seeds."""
    import warnings

    from scipy import stats

    rng = np.random.default_rng(seed)
    rows = []
    for (model, method, setting), cell in measured.groupby(["model", "method", "setting"], sort=False):
        for target in settings.targets:
            capability = settings.capability(target)
            if capability not in cell:
                continue
            truth = cell.pivot_table(index="entry", columns="seed", values=capability)
            for name, proxy in PROXIES.items():
                chosen = proxies[(proxies["model"] == model) & (proxies["target"] == target) & (proxies["proxy"] == name)]
                if name == MASK_PROXY:
                    chosen = chosen[(chosen["method"] == method) & (chosen["setting"] == setting)]
                predicted = chosen.pivot_table(index="entry", columns="seed", values="value")
                entries = sorted(set(truth.index) & set(predicted.index))
                seeds = sorted(set(truth.columns) & set(predicted.columns))
                if len(entries) < 3 or not seeds:
                    continue
                t, p = truth.loc[entries, seeds], predicted.loc[entries, seeds]
                higher = capability == CLOZE

                def correlations(columns):
                    measured_good = _goodness(t[columns].mean(axis=1), higher)
                    predicted_good = _goodness(p[columns].mean(axis=1), proxy.higher_is_better)
                    with warnings.catch_warnings():  # tied means (a resample of one seed): rho is nan, kept so
                        warnings.simplefilter("ignore", stats.ConstantInputWarning)
                        return (stats.spearmanr(predicted_good, measured_good).statistic,
                                stats.kendalltau(predicted_good, measured_good).statistic)

                rho, tau = correlations(seeds)
                boot = [correlations(list(rng.choice(seeds, len(seeds)))) for _ in range(settings.bootstrap)]
                spearmans = np.array([b[0] for b in boot], dtype=float)
                rows.append({"model": model, "method": method, "setting": setting, "target": target, "proxy": name,
                             "spearman": rho, "kendall": tau,
                             "spearman_low": float(np.nanpercentile(spearmans, 2.5)),
                             "spearman_high": float(np.nanpercentile(spearmans, 97.5)),
                             "candidates": len(entries), "seeds": len(seeds)})
    return pd.DataFrame(rows)


def verdicts(found: pd.DataFrame, cost_share: dict[str, float]) -> pd.DataFrame:
    """Per method, setting, target and proxy over the models (the protocol's rules): predicts (mean Spearman
    >= 0.8, every interval's lower end above 0.5, cost <= 10% of brute force), weak (mean above 0.3) or does
    not predict."""
    rows = []
    for (method, setting, target, proxy), group in found.groupby(["method", "setting", "target", "proxy"], sort=False):
        mean = float(group["spearman"].mean())
        cost = max(cost_share.get(model, float("nan")) for model in group["model"])
        if mean >= 0.8 and (group["spearman_low"] > 0.5).all() and cost <= 0.10:
            verdict = "predicts"
        elif mean > 0.3:
            verdict = "weak"
        else:
            verdict = "does not predict"
        rows.append({"method": method, "setting": setting, "target": target, "proxy": proxy, "mean_spearman": mean,
                     "models": len(group), "cost_share": cost, "verdict": verdict})
    return pd.DataFrame(rows)


def read_rows(path: Path) -> pd.DataFrame:
    """The proxies computed so far (method and setting stay empty text where a proxy has none)."""
    return pd.read_csv(path, keep_default_na=False) if path.exists() else pd.DataFrame()


def cost_shares(proxies: pd.DataFrame, measured: pd.DataFrame) -> dict[str, float]:
    """Per model: the seconds one candidate's proxies took (for every target and setting at once, so an upper
    bound for one case) over the median seconds one of its measured runs took (pruning and evaluation, and
    the selection in the first run of a seed); NaN when none of its runs has a recorded time (rows carried
    from a CSV written before `run_seconds` was exported). The proxies' seconds leave out making the
    candidate's windows where `selection_seconds` was recorded (the protocol's cost is the proxies'), and
    include it for rows computed before it was (an upper bound: `proxy_seconds_include_selection`)."""
    shares = {}
    for model in proxies["model"].unique():
        per_candidate = proxies[proxies["model"] == model].groupby(["entry", "seed"])
        spent = per_candidate["seconds"].first()
        if "selection_seconds" in proxies.columns:
            selection = pd.to_numeric(per_candidate["selection_seconds"].first(), errors="coerce")
            spent = spent - selection.fillna(0.0)
        per_entry = spent.mean()
        runs = measured[measured["model"] == model] if "run_seconds" in measured.columns else measured.iloc[0:0]
        totals = pd.to_numeric(runs.get("run_seconds", pd.Series(dtype=float)), errors="coerce").dropna()
        shares[model] = float(per_entry / totals.median()) if len(totals) else float("nan")
    return shares


def proxy_seconds_include_selection(proxies: pd.DataFrame, model: str) -> bool:
    """Whether some of the model's proxy rows were timed with their windows' selection (rows written before
    `selection_seconds` was recorded)."""
    rows = proxies[proxies["model"] == model]
    if "selection_seconds" not in rows.columns:
        return True
    return bool(pd.to_numeric(rows["selection_seconds"], errors="coerce").isna().any())


def validate(settings: ValidationSettings, store, proxies_csv: Path, table_csv: Path, run_missing: bool = True,
             on_event=None, runs_csv: Path | None = None,
             on_run_event=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The measured runs (missing ones run, unless not `run_missing`), the proxies not yet in `proxies_csv`
    (appended after each model), the agreement table written to `table_csv`; returns it with the verdicts
    and the cost shares. `on_run_event` receives the runs' pipeline events, `on_event` the proxies' messages.
    `runs_csv` receives every measured run, also when the runs are interrupted (Ctrl-C): the validation
    outlasts one machine's run store only as that CSV, read back as `previous`."""
    from .tournament import run_tournament, tournament_frame

    try:
        if run_missing:
            run_tournament(settings.tournament, store, on_run_event)
    finally:
        measured = tournament_frame(settings.tournament, store)
        if runs_csv is not None and not measured.empty:
            runs_csv.parent.mkdir(parents=True, exist_ok=True)
            measured.to_csv(runs_csv, index=False)
    proxies = read_rows(proxies_csv)
    done = set(zip(proxies["model"], proxies["entry"], proxies["seed"])) if not proxies.empty else set()
    for model in settings.tournament.models:
        here = measured[measured["model"] == model] if not measured.empty else measured
        wanted = set(zip(here["entry"], here["seed"])) - {(e, s) for m, e, s in done if m == model} if len(here) else set()
        rows = proxy_rows(settings, model, wanted, on_event)
        if rows:
            proxies = pd.concat([proxies, pd.DataFrame(rows)], ignore_index=True)
            proxies.to_csv(proxies_csv, index=False)
    found = agreement(proxies, measured, settings)
    table_csv.parent.mkdir(parents=True, exist_ok=True)
    found.to_csv(table_csv, index=False)
    shares = cost_shares(proxies, measured)
    return found, verdicts(found, shares), shares


RESULTS_HEADING = "## Results"


def _share_text(model: str, share: float, proxies: pd.DataFrame) -> str:
    if share != share:
        return f"{model} not measured (its runs came from a CSV without run times)"
    if proxy_seconds_include_selection(proxies, model):
        return f"{model} {share:.1%} (with making the candidate's windows again, which was not timed apart)"
    return f"{model} {share:.1%}"


def write_results(report: Path, found: pd.DataFrame, verdicts_: pd.DataFrame, shares: dict, settings: ValidationSettings,
                  measured_points: int, command: str, proxies: pd.DataFrame) -> Path:
    """Replace the Results section of the protocol file `report` (everything above it stays as fixed)."""
    text = report.read_text(encoding="utf-8")
    head = text[: text.index(RESULTS_HEADING)] if RESULTS_HEADING in text else text + "\n"
    planned = sum(len(settings.tournament.points(m)) for m in settings.tournament.models)
    lines = [RESULTS_HEADING, "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}` from {measured_points} of "
             f"the protocol's {planned} measured points (the others not run yet: cases they would complete are "
             f"missing below, and a case needs 3 or more candidates). Per-case table: "
             f"`calib_core/data/advisor_validation.csv` (what `advise` looks up); the proxies per candidate and seed: "
             f"`docs/results/advisor-proxies.csv`.", ""]
    if found.empty:
        report.write_text(head + "\n".join(lines + ["No case has enough candidates yet.", ""]) + "\n", encoding="utf-8")
        return report
    summary = (found.groupby(["target", "proxy"], sort=False)["spearman"]
               .agg(mean="mean", low="min", high="max", cases="count").reset_index())
    lines += ["Mean Spearman per target and proxy over every (model, method, setting) case measured, with the "
              "lowest and highest case:", "", summary.to_markdown(index=False, floatfmt=".2f"), "",
              "Cost of one candidate's proxies (every target and setting at once: an upper bound for one case) as a "
              "share of one pruning run of it (each timed on the machine that computed it): "
              + ", ".join(_share_text(model, share, proxies) for model, share in shares.items()) + ".", ""]
    counts = verdicts_["verdict"].value_counts().to_dict()
    best = summary.sort_values("mean", ascending=False).head(3)
    met = verdicts_[verdicts_["verdict"] == "predicts"]
    lines += ["Verdicts per (method, setting, target, proxy) under the protocol's rules: "
              + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
              ("The goal (mean Spearman >= 0.8 at <= 10% of the brute-force cost) is **met** for: "
               + "; ".join(f"{r.proxy} on {r.target} ({r.method} {r.setting})" for r in met.itertuples()) + "."
               if not met.empty else "The goal (mean Spearman >= 0.8 at <= 10% of the brute-force cost) is **not met** "
                                     "in any case measured so far."),
              "", "Highest mean agreement: " + "; ".join(f"{r.proxy} on {r.target} {r['mean']:.2f}"
                                                        for _, r in best.iterrows()) + ".", ""]
    report.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    return report
