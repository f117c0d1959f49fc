"""bfloat16 on a CPU: torch's own bf16 kernel against our routing through float32 (calib_core.half_matmul),
with float32 as the baseline, on the bundled model.

Per mode: the seconds of one forward of 2 x 256 tokens (median of 3), the dense perplexity on 8 x 256
held-out tokens of builtin:wiki, and a Wanda 50% prune on 8 x 256 tokens of builtin:wiki (seed 0, the
tournament's size): its seconds and the share of kept weights equal to the torch-kernel run's (Jaccard).
On a CPU without bf16 arithmetic load_model routes by itself; on one with it the routed mode is forced here,
for the comparison only.

    .venv/bin/python bench/half_matmul_bench.py          # about 4 min on 2 CPUs without bf16 arithmetic
"""

from __future__ import annotations

import copy
import statistics
import time

from _common import ROOT, write_results  # first: it puts the repository on sys.path

OUT = ROOT / "bench" / "results" / "half_matmul_bench"


def _with_linears(model, cls):
    import torch

    from calib_core.half_matmul import HalfViaFloat32Linear

    twin = copy.deepcopy(model)
    for module in twin.modules():
        if type(module) in (torch.nn.Linear, HalfViaFloat32Linear):
            module.__class__ = cls
    return twin


def _forward_seconds(model, ids) -> float:
    import torch

    times = []
    with torch.no_grad():
        for _ in range(3):
            started = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    import torch

    from calib_core.data.sources import build_calibration
    from calib_core.half_matmul import HalfViaFloat32Linear, half_arithmetic_names
    from calib_core.metrics.perplexity import perplexity
    from calib_core.models import decoder_blocks, load_model, prunable_modules
    from calib_core.provenance import cpu_kind
    from calib_core.prune import PruneConfig
    from calib_core.prune.engine import prune_model

    torch.set_num_threads(2)
    base = load_model("smollm2-135m", dtype="bfloat16")
    modes = {"float32": _with_linears(base.model, torch.nn.Linear).float(),
             "bfloat16, torch's kernel": _with_linears(base.model, torch.nn.Linear),
             "bfloat16, routed through float32": _with_linears(base.model, HalfViaFloat32Linear)}
    ids = torch.randint(0, 40000, (2, 256), generator=torch.Generator().manual_seed(0))
    calibration = build_calibration("builtin:wiki", base.tokenizer, 8, 256, 0).input_ids
    rows, masks = [], {}
    for mode, model in modes.items():
        forward = _forward_seconds(model, ids)
        ppl = perplexity(model, base.tokenizer, "builtin:wiki", seqlen=256, max_windows=8).ppl
        started = time.perf_counter()
        prune_model(model, calibration, PruneConfig(device="cpu", method="wanda", sparsity=0.5))
        masks[mode] = [m.weight != 0 for block in decoder_blocks(model) for m in prunable_modules(block).values()]
        rows.append({"mode": mode, "forward_s": forward, "dense_ppl": ppl,
                     "wanda_prune_s": time.perf_counter() - started})
        print(rows[-1], flush=True)
    kernel = "bfloat16, torch's kernel"
    for row in rows:
        row["forward_x_fp32"] = row["forward_s"] / rows[0]["forward_s"]
        pairs = list(zip(masks[kernel], masks[row["mode"]]))
        row["jaccard_with_torch_kernel"] = (sum(int((a & b).sum()) for a, b in pairs)
                                            / sum(int((a | b).sum()) for a, b in pairs))
    lines = [f"CPU: {cpu_kind()}, half arithmetic: {half_arithmetic_names()}, 2 threads.", "",
             "| mode | forward 2 x 256 (s) | x float32 | dense ppl builtin:wiki | Wanda 50% prune (s) | "
             "Jaccard of kept weights with torch's bf16 kernel |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['forward_s']:.2f} | {r['forward_x_fp32']:.1f} | {r['dense_ppl']:.3f} | "
              f"{r['wanda_prune_s']:.1f} | {r['jaccard_with_torch_kernel']:.4f} |" for r in rows]
    write_results(OUT, {"cpu": cpu_kind(), "half_arithmetic": half_arithmetic_names(), "rows": rows}, lines)


if __name__ == "__main__":
    main()
