"""Watching must not slow the work: the same prune with 0, 1 and 3 headless browser tabs open on the
app's Prune page, each tab showing the running job live; 3 tabs also with the page's "Live charts"
toggle off (only the progress line redraws while the job runs).

The app's server is started exactly as the README's `make run` starts it (tests/app_server.py: the
venv's `streamlit run app.py` in the repository with its `.streamlit/config.toml`, no flags but a free
port), on a private data folder; for each condition the tabs
are opened (Playwright + Debian's chromium). They show the previous run with its charts, as the Prune
page does once a run was made. Once they are idle (the browsers spend under 0.05 CPU s a second),
one prune job is submitted to the app's job manager (a worker process, exactly as the Prune page's
button does); the tabs notice it themselves. The job is timed from the worker's own start to its
end. Conditions are interleaved over several rounds so that machine drift hits them alike. Also
recorded: the CPU seconds the server and the browsers spent during the run (here they share the
job's CPUs).

    .venv/bin/python bench/live_view_bench.py          # about 20 min on 2 CPUs

Target: the median wall time with 3 tabs at most 1.2x the median with none.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from _common import ROOT, write_results  # first: it puts the repository on sys.path
from playwright.sync_api import expect

from tests.app_server import BROWSER_ARGS, CHROMIUM, app_server  # noqa: E402

OUT = ROOT / "bench" / "results" / "live_view_bench"
# (tabs, live charts): the Prune page's "Live charts" toggle off redraws only the progress line.
CONDITIONS = ((0, True), (1, True), (3, True), (3, False))
ROUNDS = 5
PRUNE = dict(nsamples=16, seqlen=256, eval_windows=4)  # Wanda 50% of the bundled model


def browser_cpu_s() -> dict[int, float]:
    """CPU seconds so far of each chromium process (the browsers render on the job's CPUs)."""
    seconds = {}
    for proc in psutil.process_iter(["name"]):
        if "chrom" in (proc.info["name"] or ""):
            try:
                seconds[proc.pid] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
    return seconds


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the chromium processes spent since `before` (new processes count from zero)."""
    return sum(now - before.get(pid, 0.0) for pid, now in browser_cpu_s().items())


def wait_until_idle(limit_s: float = 60.0) -> None:
    """Until the browsers spend under 0.05 CPU s in a second: the tabs have finished opening (drawing
    the last run's charts included), so that only watching the job is measured."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        before = browser_cpu_s()
        time.sleep(1.0)
        if cpu_since(before) < 0.05:
            return


def one_run(browser, url: str, tabs: int, live_charts: bool, server: psutil.Process, data: Path) -> dict:
    os.environ["CALIB_LAB_DATA"] = str(data)
    from calib_core.jobs import manager, tasks
    from calib_core.prune import PruneConfig
    from calib_core.runs.spec import EvalSpec, RunSpec

    job = RunSpec(calib="builtin:wiki", nsamples=PRUNE["nsamples"], seqlen=PRUNE["seqlen"],
                  config=PruneConfig(method="wanda", sparsity=0.5), evaluation=EvalSpec(windows=PRUNE["eval_windows"]))
    # The tabs are open (and idle) before the job starts, as in a demo: they notice it themselves. They
    # show the previous run with its charts, as the Prune page does once a run was made.
    pages = [browser.new_page(viewport={"width": 1400, "height": 1800}) for _ in range(tabs)]
    for page in pages:
        page.goto(url + "/prune")
        page.get_by_text("Per-block sparsity").first.wait_for(timeout=300_000)
        if not live_charts:
            page.get_by_text("Live charts").click()
            expect(page.get_by_role("switch", name="Live charts")).not_to_be_checked(timeout=60_000)
    wait_until_idle()
    cpu_before, browser_before = sum(server.cpu_times()[:2]), browser_cpu_s()
    submitted = manager().submit("bench wanda 0.5", tasks.prune, job, kind="prune")
    for page in pages:
        page.get_by_text(f"Job {submitted.id} (").first.wait_for(timeout=300_000)
    while not submitted.done:
        time.sleep(0.2)
    server_cpu, browser_cpu = sum(server.cpu_times()[:2]) - cpu_before, cpu_since(browser_before)
    assert submitted.status == "finished", submitted.error
    charts_seen = True
    for page in pages:  # every tab shows the job finished, with its charts
        try:
            page.get_by_text(f"Job {submitted.id} (bench wanda 0.5): finished").first.wait_for(timeout=60_000)
            page.get_by_text("Per-block sparsity").first.wait_for(timeout=60_000)
        except Exception:  # noqa: BLE001 (playwright's timeout): recorded, not fatal
            charts_seen = False
    for page in pages:
        page.close()
    timings = submitted.result["timings"]
    return {"tabs": tabs, "live_charts": live_charts, "wall_s": submitted.ended - submitted.started, "prune_s": timings.get("prune_total"),
            "server_cpu_s": server_cpu, "browser_cpu_s": browser_cpu, "charts_in_every_tab": charts_seen}


def main() -> None:
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        data = Path(folder) / "data"
        with app_server(dict(os.environ, CALIB_LAB_DATA=str(data))) as (server, url):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                one_run(browser, url, 0, True, psutil.Process(server.pid), data)  # warm-up: caches, converted model
                for round_ in range(ROUNDS):
                    for tabs, live in (CONDITIONS if round_ % 2 == 0 else CONDITIONS[::-1]):
                        rows.append(one_run(browser, url, tabs, live, psutil.Process(server.pid), data))
                        print(rows[-1], flush=True)
            finally:
                browser.close()
    summary = []
    for tabs, live in CONDITIONS:
        mine = [r for r in rows if (r["tabs"], r["live_charts"]) == (tabs, live)]
        summary.append({"tabs": tabs, "live_charts": live,
                        "median_wall_s": statistics.median(r["wall_s"] for r in mine),
                        "median_server_cpu_s": statistics.median(r["server_cpu_s"] for r in mine),
                        "median_browser_cpu_s": statistics.median(r["browser_cpu_s"] for r in mine),
                        "charts_in_every_tab": all(r["charts_in_every_tab"] for r in mine), "runs": len(mine)})
    base = summary[0]["median_wall_s"]
    for row in summary:
        row["ratio_to_no_tab"] = row["median_wall_s"] / base
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| tabs on the Prune page | live charts | median wall time (s) | ratio to no tab "
             "| server CPU during the run (s) | browsers' CPU during the run (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['tabs']} | {'on' if r['live_charts'] else 'off'} | {r['median_wall_s']:.1f} "
              f"| {r['ratio_to_no_tab']:.2f} | {r['median_server_cpu_s']:.1f} | {r['median_browser_cpu_s']:.1f} |"
              for r in summary]
    write_results(OUT, {"settings": PRUNE, "rounds": ROUNDS, "runs": rows, "summary": summary}, lines)


if __name__ == "__main__":
    main()
