"""A chart with its exports: PNG from the chart's own toolbar (the camera icon; drawn by the browser),
HTML (interactive, plotly.js embedded so it opens offline) and the data it draws as CSV. The files
are made only when a button is clicked."""

from __future__ import annotations

from calib_core.experiments.run_figures import Chart


def show_chart(container, chart: Chart, name: str, key_prefix: str = "", exports: bool = True) -> None:
    """`exports=False` for a chart still filling up (a running job's): its data is partial, and the
    buttons would cost every watching browser a redraw per refresh."""
    key = f"{key_prefix}{name}"
    container.plotly_chart(chart.figure, width="stretch", key=f"chart-{key}",
                           config={"toImageButtonOptions": {"format": "png", "filename": name, "scale": 2},
                                   "displaylogo": False})
    if not exports:
        return
    html, csv, _ = container.columns([1, 1, 4])
    html.download_button("HTML", lambda: chart.figure.to_html(include_plotlyjs=True), f"{name}.html",
                         mime="text/html", key=f"html-{key}", on_click="ignore", icon=":material/download:",
                         help="The interactive chart as one file (PNG: the camera icon above the chart).")
    csv.download_button("CSV", lambda: chart.data.to_csv(index=False), f"{name}.csv", mime="text/csv",
                        key=f"csv-{key}", on_click="ignore", icon=":material/download:", help="The data drawn")
