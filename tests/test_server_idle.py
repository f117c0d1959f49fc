"""The server as users start it (README: `make run`, i.e. `.venv/bin/streamlit run app.py` in the
repository, with the virtualenv inside it) stays quiet while a tab is open and no job runs.

Streamlit's default file watcher watches the folder of app.py recursively, `.venv/` included (tens of
thousands of files): inotify's queue overflows and it rescans without end, a whole core for as long as
a tab is open, which made every prune on a 2-core machine 10x slower. The repository's
`.streamlit/config.toml` turns file watching off; this test measures the server as started.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.app_server import ROOT, app_server, cpu_over, open_tab, require_browser, wait_until_quiet

IDLE_WINDOW_S = 30.0
# "At most a few CPU seconds per minute": an idle tab asks every 5 s whether a job started (under 1 CPU
# s a minute here); the limit leaves room for a CI machine several times slower. The watcher's rescans
# cost about a CPU second per second.
MAX_CPU_S_PER_MINUTE = 5.0


def test_the_server_started_as_the_readme_says_is_quiet_with_an_idle_tab(tmp_path):
    require_browser()
    venv = Path(sys.prefix).resolve()
    if ROOT not in venv.parents:
        pytest.skip(f"the README's setup puts .venv inside the repository; this interpreter's environment "
                    f"({venv}) is elsewhere, so the server would not see what a user's sees")
    log = tmp_path / "server.log"
    with open(log, "w") as output, app_server(dict(os.environ, CALIB_LAB_DATA=str(tmp_path / "data")),
                                              output=output) as (proc, url), open_tab(url, "/prune") as page:
        wait_until_quiet(proc.pid)  # the page's first run (model and tokenizer loads) is over
        measured = cpu_over(proc.pid, IDLE_WINDOW_S)
        assert page.get_by_role("heading", name="Prune").first.is_visible()  # the tab stayed open
    overflows = log.read_text(errors="replace").count("Inotify queue overflowed")
    print(f"server CPU with one idle tab on /prune: {measured['cpu_s']:.2f} s in {measured['elapsed_s']:.0f} s "
          f"({measured['cpu_s_per_minute']:.1f} CPU s/min); inotify overflow lines: {overflows}")
    assert measured["cpu_s_per_minute"] <= MAX_CPU_S_PER_MINUTE, (
        f"the server spent {measured['cpu_s']:.1f} CPU s in {measured['elapsed_s']:.0f} s with one idle tab "
        f"({measured['cpu_s_per_minute']:.1f} CPU s a minute, limit {MAX_CPU_S_PER_MINUTE}); "
        f"'Inotify queue overflowed' lines in its log: {overflows}")
