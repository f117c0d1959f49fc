"""The charts of pruning runs, live (from a job's events) and stored (from run records), each with
the table it draws so that a page can export both. Block axes always show whole block numbers,
every axis names its unit, and colour scales follow the data."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ..data.sets import mark_deleted
from ..prune.events import blocks_frame, modules_frame
from ..runs.store import strategy_label

BLOCK_AXIS = "block (decoder layer index)"
SPARSITY_AXIS = "sparsity (fraction of weights zeroed)"


@dataclass
class Chart:
    figure: go.Figure
    data: pd.DataFrame


def whole_blocks(fig: go.Figure, blocks: int, axis: str = "x") -> go.Figure:
    """Integer ticks on a block axis (one block would otherwise show -0.4 .. 0.4)."""
    step = max(1, -(-blocks // 16))  # at most ~16 labels
    getattr(fig, f"update_{axis}axes")(tickmode="linear", tick0=0, dtick=step, tickformat="d", title_text=BLOCK_AXIS)
    return fig


def whole_counts(fig: go.Figure, most: int, axis: str = "y") -> go.Figure:
    """Whole-number ticks on a count axis whose counts are at most `most` (a few would show 0.2 steps)."""
    if most <= 10:
        getattr(fig, f"update_{axis}axes")(tickmode="linear", tick0=0, dtick=1, tickformat="d", rangemode="tozero")
    return fig


def ticks_at(fig: go.Figure, values, axis: str = "x") -> go.Figure:
    """Ticks at exactly the values a chart has (one sparsity would otherwise show 0.45 .. 0.55 in steps)."""
    getattr(fig, f"update_{axis}axes")(tickmode="array", tickvals=sorted(set(values)))
    return fig


def live_prune_charts(events: list) -> dict[str, Chart]:
    """What a running prune shows, from its events: per-block sparsity (with OWL's plan), seconds per
    block, the relative reconstruction error of every module, and OWL's outlier ratios. The first three
    exist from the start, empty until a block ends: a chart that stays on the page is updated in place
    by the browser, while a new one costs it several times more."""
    blocks = [e for e in events if getattr(e, "kind", "") == "block"]
    modules = [e for e in events if getattr(e, "kind", "") == "module" and e.rel_recon_error is not None]
    allocation = next((e for e in events if getattr(e, "kind", "") == "allocation"), None)
    announced = [e.total for e in events if getattr(e, "kind", "") == "stage" and e.stage == "prune"]
    planned_blocks = len(allocation.target_sparsities) if allocation else max(announced + [len(blocks)])
    frame = blocks_frame(blocks)
    charts = {"sparsity": Chart(_sparsity_figure(frame, allocation, planned_blocks), frame)}
    fig = px.bar(frame, x="block", y="seconds", title="Seconds per block", height=300, labels={"seconds": "time (s)"})
    charts["seconds"] = Chart(whole_blocks(fig, planned_blocks), frame[["block", "seconds"]])
    table = modules_frame(modules)
    title = "Relative reconstruction error ||WX - W'X|| / ||WX|| (colour: its own range)"
    if modules:
        pivot = table.pivot(index="module", columns="block", values="error")
        fig = px.imshow(pivot, aspect="auto", color_continuous_scale="Viridis", height=320, title=title,
                        labels={"color": "relative error", "x": BLOCK_AXIS})
        fig = whole_blocks(fig, pivot.shape[1])
    else:
        fig = whole_blocks(go.Figure(layout=dict(title=title, height=320, yaxis_title="module")), 1)
    charts["recon_error"] = Chart(fig, table)
    if allocation is not None:
        plan = pd.DataFrame({"block": range(len(allocation.outlier_ratios)), "outlier_ratio": allocation.outlier_ratios,
                             "target_sparsity": allocation.target_sparsities, "pattern": allocation.patterns})
        fig = px.line(plan, x="block", y="outlier_ratio", markers=True, height=250, title="OWL outlier ratio",
                      labels={"outlier_ratio": "outlier ratio D_l (% of scores > M x mean)"})
        charts["owl_outliers"] = Chart(whole_blocks(fig, len(plan)), plan)
    if not blocks:
        for name in ("sparsity", "seconds", "recon_error"):
            _waiting(charts[name].figure, planned_blocks, unit_range=name == "sparsity")
    return charts


def _waiting(fig: go.Figure, planned_blocks: int, unit_range: bool) -> None:
    """An empty live chart before its first block: the model's blocks on x (when known), and what it waits for."""
    if planned_blocks:
        fig.update_xaxes(range=[-0.5, planned_blocks - 0.5])
    fig.update_yaxes(range=[0, 1] if unit_range else None, showticklabels=unit_range)
    fig.add_annotation(text="waiting for the first block" if planned_blocks else "loading the model and the data",
                       xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font_size=16)


def _sparsity_figure(frame: pd.DataFrame, allocation, planned_blocks: int) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=frame.block, y=frame.achieved, name="achieved sparsity")
    if allocation is not None:
        fig.add_scatter(x=list(range(len(allocation.target_sparsities))), y=allocation.target_sparsities,
                        name="OWL allocation", mode="lines+markers")
        mean = sum(allocation.target_sparsities) / len(allocation.target_sparsities)
        fig.add_hline(y=mean, line_dash="dot", annotation_text="planned mean")
    elif len(frame):
        fig.add_hline(y=float(frame.target.iloc[0]), line_dash="dot", annotation_text="uniform target")
    fig.update_layout(title="Per-block sparsity", yaxis_title=SPARSITY_AXIS, height=300)
    return whole_blocks(fig, planned_blocks)


# --- stored runs -------------------------------------------------------------------------------------
BLOCK_METRICS = {"sparsity": SPARSITY_AXIS, "max_rel_error": "worst module's relative reconstruction error",
                 "seconds": "time (s)", "target": "target sparsity"}


def run_label(run: dict) -> str:
    """A run named by what distinguishes it: id, method, sparsity or pattern, calibration source, the
    strategy that chose its windows (when not the random draw), and the draw (nsamples x seqlen, seed)."""
    record = run.get("record") or {}
    job = record.get("job") or {}
    draw = (f" · {job['nsamples']}x{job['seqlen']} seed {job['seed']}"
            if job.get("calib") and job.get("nsamples") is not None else "")
    strategy = strategy_label(record)
    chosen = f" by {strategy}" if strategy and strategy != "random" else ""
    calibration = mark_deleted(run.get("calibration")) or "no data"
    return (f"#{run['id']} {run.get('method')} {run.get('sparsity')} · {calibration}{chosen}"
            f"{draw}")


def blocks_of_runs(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, block) of the runs' records."""
    rows = []
    for run in runs:
        for block in (run.get("record") or {}).get("blocks", []):
            errors = [m.get("rel_recon_error") for m in block.get("modules", []) if m.get("rel_recon_error") is not None]
            rows.append({"run": run_label(run), "run_id": run["id"], "block": block["index"],
                         "sparsity": block["sparsity"], "target": block.get("target_sparsity"),
                         "max_rel_error": max(errors) if errors else None, "seconds": block.get("seconds")})
    return pd.DataFrame(rows, columns=["run", "run_id", "block", "sparsity", "target", "max_rel_error", "seconds"])


def overlay_chart(runs: list[dict], metric: str) -> Chart:
    """The per-block curves of several runs on one chart."""
    frame = blocks_of_runs(runs)
    fig = px.line(frame, x="block", y=metric, color="run", markers=True, title=f"Per-block {metric.replace('_', ' ')}",
                  labels={metric: BLOCK_METRICS[metric]})
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25))
    return Chart(whole_blocks(fig, int(frame.block.max()) + 1 if len(frame) else 1), frame)


def perplexity_chart(table: pd.DataFrame, metric: str, dense: float | None) -> Chart:
    """Perplexity per run, labelled by run, coloured by calibration source (what the lab varies; the
    method is the bars' pattern), with the dense model's perplexity as a line when known."""
    data = table.dropna(subset=[metric])[["label", "id", "method", "sparsity", "calibration", metric]]
    data = data.assign(calibration=data["calibration"].fillna("no data"))
    fig = px.bar(data, x="label", y=metric, color="calibration", pattern_shape="method", title="Perplexity per run",
                 labels={"label": "run", metric: f"{metric} (lower is better)", "calibration": "calibration source"})
    if dense is not None:
        fig.add_hline(y=dense, line_dash="dash", annotation_text=f"dense model {dense:.2f}")
    fig.update_xaxes(tickangle=-30)
    return Chart(fig, data)


def similarity_vs_perplexity_chart(points: pd.DataFrame, metric: str) -> Chart:
    """Each calibration set's Min-K%++ (mean over its scored items) against the perplexity its runs
    pruned to (mean over seeds, with the spread as error bars): the claim that data more like the
    pretraining data prunes better, checked on this machine's runs."""
    fig = px.scatter(points, x="min_k_pp", y="ppl_mean", error_y="ppl_std", color="setting", symbol="method",
                     text="calibration", title="Similarity to pretraining data vs perplexity after pruning",
                     labels={"min_k_pp": "Min-K%++ of the calibration set (higher: more training-like)",
                             "ppl_mean": f"{metric} after pruning (mean over seeds)"})
    fig.update_traces(textposition="top center")
    return Chart(fig, points)
