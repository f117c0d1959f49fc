"""Plotly figures of the inside-a-layer views (metrics/inside.py), each with the two sentences a teacher
says over it, and their export as PNG, HTML and CSV (the Inside a layer page and `inspect` both use them).
Large fonts: they are shown on projectors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import MissingDependencyError, NotEnoughDataError
from ..files import atomic_file
from ..metrics import inside
from .sweep_figures import export

FONT = dict(size=16)
KEPT, PRUNED = "#4c78a8", "#e45756"

EXPLAIN = {
    "channels": "Each bar is one input channel of this layer: how strongly the calibration text drives it (its "
                "activation norm, log scale), outliers marked. Wanda, OWL and RIA multiply every weight by its "
                "channel's norm, so a channel the text inflates protects all of its weights from pruning.",
    "scores": "Each dot is one weight: its size |W| across, the method's score up, blue if the run kept it. "
              "Magnitude pruning would cut on |W| alone; the dots that the score lifts above or drops below that "
              "cut are the weights the calibration data saved or sacrificed.",
    "mask": "The weight matrix in tiles (rows: output features, columns: input channels), each coloured by the "
            "share of weights kept. Vertical stripes are input channels the calibration data made important; for "
            "two runs, the map shows where their masks part ways.",
    "model": "One point per block: how much OWL thinks it holds outliers, the sparsity it was given and the sparsity "
             "reached. For two runs, how alike their masks are (Jaccard) and how far apart their channel norms sit, "
             "block by block.",
}


@dataclass
class View:
    name: str
    figure: go.Figure
    table: object  # DataFrame exported as CSV
    explain: str


def _layout(fig: go.Figure, title: str, height: int = 460) -> go.Figure:
    fig.update_layout(title=title, height=height, font=FONT, margin=dict(t=90, l=70, r=30, b=60),
                      legend=dict(orientation="h", y=-0.18))
    return fig


def channels_view(a, block: int, module: str, b=None, m: float = inside.OWL_M) -> View:
    table = inside.channel_table(a, block, module, b, m)
    rows = 2 if b is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["activation norm per input channel (sorted by run A)"]
                        + (["ratio of norms, run A / run B (same channels)"] if b is not None else []))
    colours = np.where(table["outlier_a"], PRUNED, KEPT)
    fig.add_trace(go.Bar(x=table["rank"], y=table["norm_a"], marker_color=colours, name=a.label(),
                         customdata=table[["channel"]], hovertemplate="channel %{customdata[0]}<br>norm %{y:.4g}"
                                                                      "<extra></extra>"), row=1, col=1)
    # a line trace, not a shape: a shape's annotation on a log axis takes log10 coordinates
    threshold = m * float(table["norm_a"].mean())
    fig.add_trace(go.Scatter(x=[1, len(table)], y=[threshold, threshold], mode="lines", name=f"outlier: > {m:g} x mean",
                             line=dict(dash="dash", color=PRUNED)), row=1, col=1)
    if b is not None:
        fig.add_trace(go.Scatter(x=table["rank"], y=table["norm_b"], mode="markers", marker=dict(size=4, color="#54a24b"),
                                 name=b.label()), row=1, col=1)
        fig.add_trace(go.Bar(x=table["rank"], y=table["ratio_a_to_b"], marker_color="#72b7b2", showlegend=False,
                             customdata=table[["channel"]],
                             hovertemplate="channel %{customdata[0]}<br>A / B %{y:.3g}<extra></extra>"), row=2, col=1)
        fig.add_trace(go.Scatter(x=[1, len(table)], y=[1, 1], mode="lines", line=dict(color="#888"), showlegend=False),
                      row=2, col=1)
        fig.update_yaxes(type="log", title_text="A / B", row=2, col=1)
    fig.update_yaxes(type="log", title_text="||X_j||", row=1, col=1)
    fig.update_xaxes(title_text="channel rank", row=rows, col=1)
    outliers = int(table["outlier_a"].sum())
    return View("channels", _layout(fig, f"Channels: block {block} {module}: {outliers} outlier channel(s) of "
                                         f"{len(table)}", 420 + 260 * (rows - 1)), table, EXPLAIN["channels"])


def scores_view(run, block: int, module: str, sample: int = 4000) -> View:
    view = inside.score_view(run, block, module, sample)
    data = view.sample
    fig = go.Figure()
    for kept, name, colour in ((True, "kept", KEPT), (False, "pruned", PRUNED)):
        part = data[data["kept"] == kept]
        fig.add_trace(go.Scattergl(x=part["abs_weight"], y=part["score"], mode="markers", name=name,
                                   marker=dict(size=4, color=colour, opacity=0.6)))
    fig.update_xaxes(type="log", title_text="|W|")
    fig.update_yaxes(type="log", title_text="score")
    title = (f"Scores: block {block} {module}: {view.disagreement:.1%} of {view.weights:,} weights pruned "
             f"differently from magnitude<br><sub>score = {view.formula}</sub>")
    return View("scores", _layout(fig, title, 500), data, EXPLAIN["scores"])


def mask_view(a, block: int, module: str, b=None, top_k: int | None = None) -> View:
    import pandas as pd

    if b is None:
        kept = a.kept(block, module)
        tiles = inside.tile_means(kept.astype(np.float64))
        fig = go.Figure(go.Heatmap(z=tiles, colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="kept")))
        title = f"Mask: block {block} {module}: {kept.mean():.1%} of {kept.size:,} weights kept"
        table = pd.DataFrame(tiles).rename_axis("row_tile").reset_index()
    else:
        diff = inside.mask_difference(a, b, block, module, top_k)
        fig = go.Figure(go.Heatmap(z=diff.differ_tiles, colorscale="Reds", zmin=0, colorbar=dict(title="differ")))
        title = (f"Masks apart: block {block} {module}: Jaccard {diff.jaccard:.3f}<br><sub>{diff.top_k_share:.1%} of the "
                 f"{diff.differ:,} differing weights sit on the top {diff.top_k} channel(s) by norm "
                 f"({diff.top_k_expected:.1%} if they fell at random)</sub>")
        table = diff.per_channel
    fig.update_xaxes(title_text="input channels (tiles)")
    fig.update_yaxes(title_text="output features (tiles)", autorange="reversed")
    return View("mask", _layout(fig, title, 520), table, EXPLAIN["mask"])


def model_view(a, b=None) -> View:
    table = inside.model_table(a, b)
    rows = 2 if b is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        specs=[[{"secondary_y": True}]] + ([[{}]] if b is not None else []),
                        subplot_titles=["sparsity per block (run A)"] + (["run A vs run B"] if b is not None else []))
    for column, name, dash in (("allocated_a", "allocated sparsity", "dash"), ("achieved_a", "achieved sparsity", None)):
        fig.add_trace(go.Scatter(x=table["block"], y=table[column], mode="lines+markers", name=name,
                                 line=dict(dash=dash)), row=1, col=1)
    if table["outlier_percent_a"].notna().any():  # OWL runs
        fig.add_trace(go.Scatter(x=table["block"], y=table["outlier_percent_a"], mode="lines+markers", line=dict(dash="dot"),
                                 name="OWL outlier ratio (% of scores > M x mean, right axis)"), row=1, col=1, secondary_y=True)
        fig.update_yaxes(title_text="outliers (%)", rangemode="tozero", row=1, col=1, secondary_y=True)
    if b is not None:
        fig.add_trace(go.Scatter(x=table["block"], y=table["jaccard"], mode="lines+markers", name="Jaccard of kept weights"),
                      row=2, col=1)
        if "norm_divergence" in table:
            fig.add_trace(go.Scatter(x=table["block"], y=table["norm_divergence"], mode="lines+markers",
                                     name="norm divergence (mean |log2 A/B|)"), row=2, col=1)
    fig.update_yaxes(range=[0, 1], title_text="sparsity", row=1, col=1, secondary_y=False)  # not +-0.5 around a constant
    fig.update_xaxes(range=[-0.5, len(table) - 0.5])
    fig.update_xaxes(title_text="block", dtick=1 if len(table) <= 32 else None, row=rows, col=1)
    return View("model", _layout(fig, "Across the model", 420 + 240 * (rows - 1)), table, EXPLAIN["model"])


def module_views(a, block: int, module: str, b=None, top_k: int | None = None) -> tuple[list[View], list[str]]:
    """The module's views that the runs' stored data allow, and a note for each that it does not."""
    views, notes = [], []
    for make in (lambda: channels_view(a, block, module, b), lambda: scores_view(a, block, module),
                 lambda: mask_view(a, block, module, b, top_k), lambda: model_view(a, b)):
        try:
            views.append(make())
        except NotEnoughDataError as exc:
            notes.append(str(exc))
    return views, notes


def export_views(views: list[View], folder: str | os.PathLike, formats=("png", "html", "csv")) -> tuple[list[Path], list[str]]:
    """Each view as PNG, HTML and CSV in `folder`; PNG is skipped (with a note) where kaleido or a browser is
    missing, the rest goes on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, notes, png_failed = [], [], False
    for view in views:
        for suffix in formats:
            path = folder / f"{view.name}.{suffix}"
            if suffix == "csv":
                with atomic_file(path) as tmp:
                    view.table.to_csv(tmp, index=False)
                written.append(path)
            elif suffix == "png" and png_failed:
                continue
            else:
                try:
                    written.append(export(view.figure, path, width=1200))
                except MissingDependencyError as exc:
                    png_failed = True
                    notes.append(f"PNG skipped: {exc}")
    return written, notes
