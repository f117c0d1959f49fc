"""What one watching browser tab costs, case by case: the CPU seconds a headless chromium spends in
20 s on a stand-in page (bench/tab_cost/app.py) that shows a job the way the app's live views do,
refreshed every 2 s. No job runs: this isolates the browser's share, which on a machine that also
runs the job is what a viewer takes from it. The cases:

    idle                        nothing refreshes
    text                        a line of text that changes at each refresh
    bar_eased                   Streamlit's progress bar, which eases to each new value over 0.5 s
    bar_no_easing               the same bar with the easing switched off (as app.py does)
    charts_unchanged            three plotly charts sent again unchanged at each refresh
    charts_updated              the three charts with new data every 6 s, updated in place
    new_charts                  three charts appearing once, in a tab that never showed one
    preloaded_then_new_charts   the same in a tab that already loaded plotly.js

    .venv/bin/python bench/tab_cost.py          # about 4 min
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _common import ROOT, write_results  # first: it puts the repository on sys.path
from live_view_bench import browser_cpu_s, cpu_since  # noqa: E402

from tests.app_server import CHROMIUM, free_port  # noqa: E402

OUT = ROOT / "bench" / "results" / "tab_cost"
CASES = ["idle", "text", "bar_eased", "bar_no_easing", "charts_unchanged", "charts_updated", "new_charts",
         "preloaded_then_new_charts"]
WINDOW_S, ROUNDS = 20.0, 2


def main() -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "bench" / "tab_cost" / "app.py"), "--server.port",
         str(port), "--server.headless", "true", "--runner.postScriptGC", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, seconds = f"http://127.0.0.1:{port}", {case: [] for case in CASES}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            for _ in range(ROUNDS):
                for case in CASES:
                    page = browser.new_page(viewport={"width": 1400, "height": 1800})
                    page.goto(f"{url}/?case={case}", timeout=120_000)
                    page.get_by_text("ready").first.wait_for(timeout=120_000)
                    if case == "preloaded_then_new_charts":
                        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                    if not case.endswith("new_charts"):
                        time.sleep(5)  # the page settled; the new-chart cases are measured from here on
                    before = browser_cpu_s()
                    time.sleep(WINDOW_S)
                    seconds[case].append(cpu_since(before))
                    page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    rows = [{"case": case, "browser_cpu_s_per_20s": statistics.median(values), "runs": values}
            for case, values in seconds.items()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| case (one tab, refresh every 2 s) | browser CPU in 20 s (s) |", "|---|---|"]
    lines += [f"| {r['case']} | {r['browser_cpu_s_per_20s']:.2f} |" for r in rows]
    write_results(OUT, {"window_s": WINDOW_S, "rounds": ROUNDS, "rows": rows}, lines)


if __name__ == "__main__":
    main()
