"""What an open app costs the machine: the server exactly as `make run` starts it (the venv's
`streamlit run app.py` in the repository, its `.streamlit/config.toml`, no flag but a free port), one
idle tab on the Prune page and no job: the server's CPU, and the time of one CLI prune (Wanda 50% of
the bundled model, 8 x 128 tokens, 4 eval windows) run while that tab is open, against the same prune
with no server at all, in 3 interleaved rounds (medians). The venv must be inside the repository, as the README's setup puts it.

    .venv/bin/python bench/server_idle_bench.py          # about 6 min on 2 CPUs
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, write_results  # first: it puts the repository on sys.path

from tests.app_server import app_server, cpu_over, open_tab, wait_until_quiet  # noqa: E402

OUT = ROOT / "bench" / "results" / "server_idle_bench"
IDLE_WINDOW_S = 40.0
ROUNDS = 3  # medians of each
PRUNE = ["prune", "--model", "smollm2-135m", "--method", "wanda", "--sparsity", "0.5", "--calib", "builtin:wiki",
         "--nsamples", "8", "--seqlen", "128", "--eval-windows", "4"]


def cli_prune_s(env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "calib_core", *PRUNE], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def with_server(env: dict, log: Path) -> dict:
    """One round with the server up and a tab open: its idle CPU, then the prune's time."""
    with open(log, "w") as output, app_server(env, output=output) as (proc, url), open_tab(url, "/prune"):
        wait_until_quiet(proc.pid, limit_s=60)  # a server that never settles is measured as it is
        idle = cpu_over(proc.pid, IDLE_WINDOW_S)
        prune_s = cli_prune_s(env)
    return {"idle_cpu_s_per_minute": idle["cpu_s_per_minute"], "cli_prune_s": prune_s,
            "overflow_lines": log.read_text(errors="replace").count("Inotify queue overflowed")}


def main() -> None:
    if ROOT not in Path(sys.prefix).resolve().parents:
        raise SystemExit(f"run this with the repository's own .venv (README), not {sys.prefix}")
    alone, served = [], []
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, CALIB_LAB_DATA=str(Path(folder) / "data"))
        cli_prune_s(env)  # warm-up: the bundled model's conversion, file caches
        for round_ in range(ROUNDS):  # interleaved, so that machine drift hits both alike
            alone.append(cli_prune_s(env))
            served.append(with_server(env, Path(folder) / f"server-{round_}.log"))
            print({"no_server_prune_s": alone[-1], **served[-1]}, flush=True)
    base = statistics.median(alone)
    summary = {"no_server_prune_s": base,
               "served_prune_s": statistics.median(r["cli_prune_s"] for r in served),
               "idle_cpu_s_per_minute": statistics.median(r["idle_cpu_s_per_minute"] for r in served),
               "overflow_lines": max(r["overflow_lines"] for r in served)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| server | server CPU, one idle tab (CPU s/min) | 'Inotify queue overflowed' lines | CLI prune (s) "
             "| ratio to no server |", "|---|---|---|---|---|",
             f"| none | - | - | {base:.1f} | 1.00 |",
             f"| as `make run` starts it, one idle tab | {summary['idle_cpu_s_per_minute']:.1f} | {summary['overflow_lines']} "
             f"| {summary['served_prune_s']:.1f} | {summary['served_prune_s'] / base:.2f} |"]
    write_results(OUT, {"prune": PRUNE, "idle_window_s": IDLE_WINDOW_S, "rounds": ROUNDS, "no_server_prune_s": alone,
                        "served": served, "summary": summary}, lines)


if __name__ == "__main__":
    main()
