"""Plotly figures of a sweep (used by the Sweeps page and the reproduction report) and their export
to HTML (self-contained, works offline) or PNG (kaleido, which drives a local Chrome/Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ConfigError, MissingDependencyError, NotEnoughDataError
from ..files import atomic_file
from .stats import PPL, setting_sort_key, spread_by_setting, summarize, transfer_table


def _settings(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["setting"].unique(), key=setting_sort_key)


def source_bars(frame: pd.DataFrame, method: str = "wanda", metric: str = PPL, magnitude=True) -> go.Figure:
    """One panel per sparsity setting: mean metric per calibration source with std error bars, and
    magnitude pruning at the same setting as a dashed reference line (named in the panel title; drawn
    when it falls near the bars). The y axes are zoomed to the bars: differences between sources are
    often a few percent."""
    data = frame[frame["method"] == method]
    settings = _settings(data)
    if not settings:
        raise NotEnoughDataError(f"No finished {method} runs to plot.")
    means = summarize(data, ["setting", "calibration"], metric)
    reference = summarize(frame[frame["method"] == "magnitude"], ["setting"], metric) if magnitude else None
    lines = {}
    if reference is not None:
        lines = {r.setting: float(r.mean) for r in reference.itertuples() if r.setting in settings}
    titles = [f"{s}<br>magnitude {lines[s]:.4g}" if s in lines else s for s in settings]
    fig = make_subplots(rows=1, cols=len(settings), subplot_titles=titles, horizontal_spacing=0.05)
    for col, setting in enumerate(settings, 1):
        group = means[means["setting"] == setting]
        fig.add_trace(go.Bar(x=group["calibration"], y=group["mean"], error_y=dict(type="data", array=group["std"]),
                             customdata=group[["std", "n"]], showlegend=False, marker_color="#4c78a8",
                             hovertemplate="%{x}<br>mean %{y:.3f}<br>std %{customdata[0]:.3f}<br>seeds "
                                           "%{customdata[1]}<extra></extra>"), row=1, col=col)
        low, high = float((group["mean"] - group["std"]).min()), float((group["mean"] + group["std"]).max())
        pad = max(high - low, 1e-3 * abs(high)) * 0.5
        lower = low - pad if low < 0 else max(low - pad, 0.0)  # positive metrics never get a negative axis
        upper = high + pad
        if setting in lines and lower <= lines[setting] <= upper * 1.5:
            upper = max(upper, lines[setting] * 1.05)
            fig.add_hline(y=lines[setting], line_dash="dash", line_color="#e45756", row=1, col=col)
        fig.update_yaxes(range=[lower, upper], row=1, col=col)
    fig.update_layout(title=f"{method}: {metric} by calibration source (mean ± std over seeds; y axes zoomed)",
                      height=440, margin=dict(t=100))
    return fig


def nsamples_band(frame: pd.DataFrame, method: str = "wanda", setting: str = "50%", metric: str = PPL) -> go.Figure:
    """mean +- std over seeds against the number of calibration samples (log x), one line per source."""
    data = frame[(frame["method"] == method) & (frame["setting"] == setting)]
    stats = summarize(data, ["calibration", "nsamples"], metric).sort_values("nsamples")
    fig = go.Figure()
    for source, group in stats.groupby("calibration", sort=False):
        if group["nsamples"].nunique() < 2:
            continue
        x = list(group["nsamples"])
        upper, lower = list(group["mean"] + group["std"]), list(group["mean"] - group["std"])
        fig.add_trace(go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", opacity=0.2, line_width=0,
                                 name=f"{source} +- std", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=group["mean"], mode="lines+markers", name=source))
    if not fig.data:
        raise NotEnoughDataError(f"No {method} {setting} source has runs at two or more sample counts.")
    fig.update_xaxes(type="log", title="calibration samples")
    fig.update_yaxes(title=metric)
    fig.update_layout(title=f"{method} {setting}: {metric} vs number of calibration samples", height=420)
    return fig


def seed_violins(frame: pd.DataFrame, method: str = "wanda", setting: str = "50%", metric: str = PPL) -> go.Figure:
    """Per-seed metric per source: the distribution behind each bar."""
    data = frame[(frame["method"] == method) & (frame["setting"] == setting)]
    if data.empty:
        raise NotEnoughDataError(f"No finished {method} runs at {setting}.")
    fig = go.Figure()
    for source, group in data.groupby("calibration", sort=False):
        fig.add_trace(go.Violin(y=group[metric], name=source, box_visible=True, points="all", meanline_visible=True,
                                customdata=group[["seed", "nsamples"]],
                                hovertemplate="seed %{customdata[0]}, n=%{customdata[1]}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{method} {setting}: per-seed {metric}", showlegend=False, height=420)
    return fig


def spread_chart(frame: pd.DataFrame, method: str = "wanda", metric: str = PPL, relative: bool = True) -> go.Figure:
    """max - min over sources of the mean metric, per sparsity setting (relative to the best source)."""
    spread = spread_by_setting(frame, metric, method)
    if spread.empty:
        raise NotEnoughDataError(f"No finished {method} runs.")
    column = "relative spread" if relative else "spread"
    y = spread[column] * (100 if relative else 1)
    fig = go.Figure(go.Bar(x=spread["setting"], y=y, customdata=spread[["best", "worst"]],
                           hovertemplate="%{x}: %{y:.3g}<br>best %{customdata[0]}<br>worst %{customdata[1]}"
                                         "<extra></extra>"))
    fig.update_layout(title=f"{method}: spread across calibration sources ({'% of best ' if relative else ''}{metric})",
                      yaxis_title="(worst - best) / best, %" if relative else f"worst - best {metric}", height=380)
    fig.update_xaxes(type="category", title="setting")  # settings are labels, never a numeric range
    return fig


def transfer_heatmap(frame: pd.DataFrame, method: str, setting: str, nsamples: int | None = None) -> go.Figure:
    """Calibrate on A (rows: calibration sources or strategies), evaluate on B (columns: evaluation domains):
    each cell the mean pruned perplexity relative to the column's best calibration, in % above it; seeds and
    Welch's p against that best on hover. A row that is best everywhere is the source to calibrate on."""
    table = transfer_table(frame, method, setting, nsamples)
    rows = list(dict.fromkeys(table["calibration"]))
    columns = list(dict.fromkeys(table["domain"]))
    cell = table.set_index(["calibration", "domain"])
    z, text, hover = [], [], []
    for source in rows:
        z.append([]), text.append([]), hover.append([])
        for domain in columns:
            if (source, domain) not in cell.index:
                z[-1].append(None), text[-1].append(""), hover[-1].append("not measured")
                continue
            c = cell.loc[(source, domain)]
            above = (c["relative"] - 1) * 100
            z[-1].append(above)
            noise = "" if c["p_vs_best"] != c["p_vs_best"] else (
                " *" if c["p_vs_best"] < 0.05 else "")  # * : beyond seed noise at 5%
            text[-1].append("best" if source == c["best"] else f"+{above:.1f}%{noise}")
            versus = ("the best on this domain" if source == c["best"] else
                      f"vs best ({c['best']}): Welch p {c['p_vs_best']:.3g}" if c["p_vs_best"] == c["p_vs_best"]
                      else f"vs best ({c['best']}): too few seeds for a test")
            hover[-1].append(f"calibrate on {source}<br>evaluate on {domain}<br>ppl {c['mean']:.3f} ± {c['std']:.3f} "
                             f"over {int(c['n'])} seed(s)<br>{versus}")
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=rows, text=text, texttemplate="%{text}", customdata=hover,
                               hovertemplate="%{customdata}<extra></extra>", colorscale="Reds", zmin=0,
                               colorbar=dict(title="% above the<br>column's best")))
    fig.update_layout(title=f"{method} {setting}: calibrate on a row, evaluate on a column (pruned perplexity, % above "
                            f"the best calibration for that domain; * p < 0.05 vs that best)",
                      xaxis_title="evaluated on", yaxis_title="calibrated on", height=140 + 48 * len(rows))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def sweep_figures(frame: pd.DataFrame, method: str, setting: str | None = None, metric: str = PPL,
                  nsamples: int | None = None, relative: bool = True) -> tuple[dict[str, go.Figure], list[str]]:
    """Every view of one method's results: bars and spread at one sample count (default: the largest),
    per-seed violins and the samples curve at one setting (default: the first). Returns the figures
    and, for views the data cannot support, why not."""
    data = frame[frame["method"] == method]
    counts = sorted(c for c in data["nsamples"].unique() if c)
    nsamples = nsamples if nsamples is not None else (counts[-1] if counts else 0)
    setting = setting or (_settings(data)[0] if not data.empty else "")
    at_count = frame[frame["nsamples"].isin([0, nsamples])]
    builders = {"bars": lambda: source_bars(at_count, method, metric),
                "spread": lambda: spread_chart(at_count, method, metric, relative),
                "violins": lambda: seed_violins(data[data["nsamples"] == nsamples], method, setting, metric),
                "nsamples": lambda: nsamples_band(frame, method, setting, metric),
                "transfer": lambda: transfer_heatmap(frame, method, setting, nsamples)}
    figures, missing = {}, []
    for name, build in builders.items():
        try:
            figures[name] = build()
        except NotEnoughDataError as exc:
            missing.append(f"{name}: {exc}")
    return figures, missing


BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # looked up on PATH for PNG export


def export(fig: go.Figure, path: str | os.PathLike, width: int = 1100, height: int | None = None) -> Path:
    """Write `fig` as .html (plotly.js embedded, readable offline) or .png (needs kaleido and a
    Chrome/Chromium; a system chromium is used when present)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        with atomic_file(path) as tmp:
            fig.write_html(tmp, include_plotlyjs=True, full_html=True)
        return path
    if path.suffix != ".png":
        raise ConfigError(f"Export to .html or .png, not '{path.suffix}'.")
    try:
        import kaleido
    except ImportError as exc:
        raise MissingDependencyError("PNG export needs kaleido: pip install kaleido (and a Chrome or Chromium).") from exc
    # A system chromium when the user named none; passed to this export only, not set process-wide.
    browser = os.environ.get("BROWSER_PATH") or next(filter(None, map(shutil.which, BROWSERS)), None)
    try:
        png = kaleido.calc_fig_sync(fig, opts={"format": "png", "width": width,
                                               "height": height or fig.layout.height or 420},
                                    kopts={"path": browser} if browser else None)
    except Exception as exc:  # kaleido reports a missing browser in several ways
        raise MissingDependencyError(f"PNG export failed ({exc}). Kaleido needs Chrome/Chromium: install chromium, or set "
                                     f"BROWSER_PATH to a Chrome binary; HTML export works without it.") from exc
    with atomic_file(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


def export_sweep(frame: pd.DataFrame, folder: str | os.PathLike, methods: list[str] | None = None,
                 formats: tuple[str, ...] = ("html", "png"), metric: str = PPL, **view) -> tuple[list[Path], list[str]]:
    """A sweep's `summary.csv` and each method's figures (`sweep_figures`, with `metric` and `view`: its
    setting, nsamples, relative) in `formats`, in `folder`; the CLI's `sweep --export` and the Sweeps
    page both export this way. Returns the files written and notes: views a method lacks data for,
    and why PNG was skipped (kaleido or no browser) after its first failure, the rest going on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "summary.csv") as tmp:
        summarize(frame, ["method", "setting", "calibration", "nsamples"], metric).to_csv(tmp, index=False)
    written, notes, png_failed = [folder / "summary.csv"], [], False
    for method in methods or sorted(frame["method"].unique()):
        figures, missing = sweep_figures(frame, method, metric=metric, **view)
        notes += [f"{method} {reason}" for reason in missing]
        for name, fig in figures.items():
            for suffix in formats:
                if suffix == "png" and png_failed:
                    continue
                try:
                    written.append(export(fig, folder / f"{method}-{name}.{suffix}"))
                except MissingDependencyError as exc:
                    png_failed = True
                    notes.append(f"PNG skipped: {exc}")
    return written, notes
