"""The GPU paths: checks that need CUDA are skipped, with that reason, where there is none; the GPU
check script says clearly when it cannot run, and its whole flow runs on a CPU with only the packages
the GPU machine has."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from calib_core.prune import PruneConfig, prune_model
from tests.tiny import random_ids, tiny_model

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_the_gpu_check_says_there_is_no_cuda_and_exits_2():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr, done.stderr


# Installed here but not on the GPU machine we test on (its Python has torch, transformers, accelerate,
# safetensors, numpy, pandas, psutil, pyyaml and pytest): the check must not import them.
NOT_ON_THE_GPU_MACHINE = ("platformdirs", "gguf", "streamlit", "plotly", "datasets", "scipy", "lm_eval", "ray",
                          "kaleido", "gensim", "bitsandbytes", "playwright", "pyarrow")


def test_the_gpu_check_runs_its_whole_flow_on_a_cpu_without_the_packages_the_gpu_machine_lacks(tmp_path):
    """`--device cpu --quick`: every family x method x dtype point and the cost points, written to
    --out after each; a module the GPU machine lacks counts as absent (None in sys.modules: import fails,
    importlib.util.find_spec says missing)."""
    runner = textwrap.dedent(f"""
        import runpy, sys
        for name in {NOT_ON_THE_GPU_MACHINE!r}:
            sys.modules[name] = None
        sys.argv = ["gpu_check.py", "--device", "cpu", "--quick", "--out", {str(tmp_path)!r}]
        sys.path.insert(0, {str(ROOT / "bench")!r})  # as `python bench/gpu_check.py` has it
        runpy.run_path({str(ROOT / "bench" / "gpu_check.py")!r}, run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    masks = [r for r in report["rows"] if r["check"] == "masks"]
    from calib_core.prune.methods import METHODS

    assert len(masks) == 4 * (len(METHODS) + 1) * 2  # every registry method at 50%, and Wanda 2:4
    assert all(r["ok"] and r["agreement"] == 1.0 for r in masks)  # CPU against CPU
    assert {r["method"] for r in masks} == set(METHODS)
    assert {r["family"] for r in masks} == {"llama", "gemma3_text", "gpt2", "opt"}
    costs = [r["what"] for r in report["rows"] if r["check"] == "cost"]
    assert costs == ["plain forward (whole model on the device)", "wanda 50% in memory", "wanda 50% streamed from disk",
                     "sparsegpt 50% in memory"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| gpt2 | sparsegpt 0.5 | bfloat16 |" in table and "streamed from disk" in table


@needs_cuda
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruning_on_cuda_gives_the_cpu_masks(method):
    ids = random_ids(4, 32)
    masks = {}
    for device in ("cpu", "cuda"):
        model = tiny_model(seed=3)
        prune_model(model, ids, PruneConfig(method=method, sparsity=0.5, device=device))
        masks[device] = torch.cat([p.detach().cpu().flatten() == 0 for n, p in model.named_parameters()
                                   if "layers" in n and n.endswith("proj.weight")])
    agreement = (masks["cpu"] == masks["cuda"]).float().mean().item()
    assert agreement == 1.0 if method == "wanda" else agreement >= 0.99, agreement
