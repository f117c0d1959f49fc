"""A saved pruned model on disk: the bundled model pruned with Wanda at 50%, 70% and 2:4 and saved
with `--save`: bytes on disk (dense safetensors), what a bitmask encoding of the pruned Linear weights
would take, the dense model's own folder for scale, and the time of the save with its reload check.

    .venv/bin/python bench/saved_model_bench.py          # about 3 min on 2 CPUs
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import ROOT, write_results  # first: it puts the repository on sys.path

OUT = ROOT / "bench" / "results" / "saved_model_bench"
SETTINGS = (("50%", dict(sparsity=0.5)), ("70%", dict(sparsity=0.7)), ("2:4", dict(pattern="2:4")))


def main() -> None:
    import torch

    from calib_core import assets
    from calib_core.prune import PruneConfig
    from calib_core.runs import RunStore
    from calib_core.runs.pipeline import run_prune
    from calib_core.runs.saved import folder_bytes
    from calib_core.runs.spec import EvalSpec, RunSpec

    torch.set_num_threads(2)
    dense_bytes = sum(p.stat().st_size for p in assets.bundled_model_dir().glob("*.safetensors"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs.sqlite")
        for name, setting in SETTINGS:
            target = Path(folder) / name.replace(":", "-").replace("%", "")
            spec = RunSpec(nsamples=16, seqlen=256, save=str(target), keep_masks=False,
                           config=PruneConfig(method="wanda", **setting), evaluation=EvalSpec(windows=4))
            record = run_prune(spec, store=store)
            saved = record["saved"]
            assert saved["bytes"] == folder_bytes(target) and saved["reload_check"]["checked"]
            rows.append({"setting": name, "overall_sparsity": record["overall_sparsity"], "folder_bytes": saved["bytes"],
                         "weights_bytes": saved["weights_bytes"], "bitmask_estimate_bytes": saved["bitmask_estimate_bytes"],
                         "save_seconds": record["timings"]["save"],
                         "max_abs_logit_diff": saved["reload_check"]["max_abs_logit_diff"]})
            print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    mib = 2**20
    lines = [f"Dense model weights: {dense_bytes / mib:.1f} MiB (fp32 safetensors).", "",
             "| Wanda | overall sparsity | folder on disk (MiB) | weights (MiB) | bitmask encoding (MiB, estimate) "
             "| ratio to dense | save + reload check (s) | max abs logit diff |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['overall_sparsity']:.4f} | {r['folder_bytes'] / mib:.1f} | "
              f"{r['weights_bytes'] / mib:.1f} | {r['bitmask_estimate_bytes'] / mib:.1f} | "
              f"{r['bitmask_estimate_bytes'] / dense_bytes:.2f} | {r['save_seconds']:.1f} | {r['max_abs_logit_diff']:g} |"
              for r in rows]
    write_results(OUT, {"dense_weights_bytes": dense_bytes, "rows": rows}, lines)


if __name__ == "__main__":
    main()
