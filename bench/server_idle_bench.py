"""What an open app costs the machine, by file-watcher setting: the server's CPU with one idle tab on
the Prune page and no job, and the time of the same CLI prune (Wanda 50% of the bundled model, 8 x 128
tokens, 4 eval windows) run while that tab is open, against the prune with no server at all.

Settings: `readme` is the server exactly as `make run` starts it (the repository's
`.streamlit/config.toml`: no file watching); `poll` adds `--server.fileWatcherType poll`, the opt-in
the README gives developers who want reruns on save; `auto` adds `--server.fileWatcherType auto`,
Streamlit's own default (the configuration before this bench: inotify on the repository, `.venv/`
included). The venv must be inside the repository, as the README's setup puts it.

    .venv/bin/python bench/server_idle_bench.py          # about 8 min on 2 CPUs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.app_server import app_server, cpu_over, open_tab, wait_until_quiet  # noqa: E402

OUT = ROOT / "bench" / "results" / "server_idle_bench"
SETTINGS = {"readme": (), "poll": ("--server.fileWatcherType", "poll"), "auto": ("--server.fileWatcherType", "auto")}
IDLE_WINDOW_S = 40.0
PRUNE = ["prune", "--model", "smollm2-135m", "--method", "wanda", "--sparsity", "0.5", "--calib", "builtin:wiki",
         "--nsamples", "8", "--seqlen", "128", "--eval-windows", "4"]


def cli_prune_s(env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "calib_core", *PRUNE], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    if ROOT not in Path(sys.prefix).resolve().parents:
        raise SystemExit(f"run this with the repository's own .venv (README), not {sys.prefix}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, CALIB_LAB_DATA=str(Path(folder) / "data"))
        cli_prune_s(env)  # warm-up: the bundled model's conversion, file caches
        rows.append({"setting": "no server", "idle_cpu_s_per_minute": None, "overflow_lines": None,
                     "cli_prune_s": cli_prune_s(env)})
        print(rows[-1], flush=True)
        for name, flags in SETTINGS.items():
            log = Path(folder) / f"{name}.log"
            with open(log, "w") as output, app_server(env, output=output, extra_args=flags) as (proc, url), \
                    open_tab(url, "/prune"):
                wait_until_quiet(proc.pid, limit_s=60)  # a watcher that rescans never settles: measured as it is
                idle = cpu_over(proc.pid, IDLE_WINDOW_S)
                prune_s = cli_prune_s(env)
            rows.append({"setting": name, "idle_cpu_s_per_minute": idle["cpu_s_per_minute"],
                         "overflow_lines": log.read_text(errors="replace").count("Inotify queue overflowed"),
                         "cli_prune_s": prune_s})
            print(rows[-1], flush=True)
    base = rows[0]["cli_prune_s"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"prune": PRUNE, "idle_window_s": IDLE_WINDOW_S, "rows": rows},
                                                   indent=2))
    lines = ["| server | server CPU, one idle tab (CPU s/min) | 'Inotify queue overflowed' lines | CLI prune meanwhile (s) "
             "| ratio to no server |", "|---|---|---|---|---|"]
    for r in rows:
        cpu = "-" if r["idle_cpu_s_per_minute"] is None else f"{r['idle_cpu_s_per_minute']:.1f}"
        lines.append(f"| {r['setting']} | {cpu} | {'-' if r['overflow_lines'] is None else r['overflow_lines']} "
                     f"| {r['cli_prune_s']:.1f} | {r['cli_prune_s'] / base:.2f} |")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
