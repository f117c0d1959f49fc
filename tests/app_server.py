"""The app's server started the way the README starts it, for the browser tests and the benches.

`make run` runs `.venv/bin/streamlit run app.py` in the repository root, with the repository's
`.streamlit/config.toml`. So do we: the same executable next to this interpreter, the same relative
script path, the same working directory, no flags but a free port (so that tests can run side by side).
Anything a user's server does (file watching included) a server started here does too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def require_browser() -> None:
    """Skip (or fail, where CI sets CALIB_LAB_E2E=required) when Playwright or chromium is missing."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -r requirements.txt)")
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CALIB_LAB_E2E") == "required":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int) -> list[str]:
    """README's `streamlit run app.py` (the venv's own `streamlit` script), plus the port."""
    script = Path(sys.executable).parent / "streamlit"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "streamlit"]
    return [*launcher, "run", "app.py", "--server.port", str(port)]


@contextlib.contextmanager
def app_server(env: dict | None = None, start_limit_s: float = 120.0, output=subprocess.DEVNULL):
    """Yield (process, url) of a running app server; stop it on exit. `env` replaces the environment
    (e.g. a private CALIB_LAB_DATA); `output` takes the server's stdout and stderr."""
    port = free_port()
    proc = subprocess.Popen(streamlit_command(port), cwd=ROOT, env=env if env is not None else dict(os.environ),
                            stdout=output, stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else output,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + start_limit_s
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {proc.returncode} before serving")
            if time.time() > deadline:
                raise RuntimeError(f"streamlit did not serve within {start_limit_s:.0f} s")
            time.sleep(0.3)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) so far of a process and its children."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for each in [root, *root.children(recursive=True)]:
        try:
            total += sum(each.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def wait_until_quiet(pid: int, limit_s: float = 120.0, probe_s: float = 2.0, below_cpu_s: float = 0.2) -> None:
    """Until the process tree spends under `below_cpu_s` CPU seconds in a `probe_s` window (a page's
    first run, which loads the model and tokenizer, is over); a server that never settles is measured
    as it is."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        before = process_tree_cpu_s(pid)
        time.sleep(probe_s)
        if process_tree_cpu_s(pid) - before < below_cpu_s:
            return


@contextlib.contextmanager
def open_tab(url: str, path: str = "/prune", drawn: str = "Start pruning"):
    """Yield a headless chromium tab on `path` once its button `drawn` shows (the page's script ran)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + path)
            page.get_by_role("button", name=drawn).first.wait_for(timeout=300_000)
            yield page
        finally:
            browser.close()


def cpu_over(pid: int, seconds: float) -> dict:
    """The process tree's CPU over the next `seconds`: {"cpu_s", "elapsed_s", "cpu_s_per_minute"}."""
    before, started = process_tree_cpu_s(pid), time.perf_counter()
    time.sleep(seconds)  # the measurement window itself, not a wait for a state
    spent, elapsed = process_tree_cpu_s(pid) - before, time.perf_counter() - started
    return {"cpu_s": spent, "elapsed_s": elapsed, "cpu_s_per_minute": spent / elapsed * 60}
