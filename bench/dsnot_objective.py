"""DSnoT against its own objective on real statistics: the share of rows whose expected output shift
|err| ends <= 0.1, for the authors' swap rule and our former one (block 0 of the bundled model, 8 x 512
wiki tokens, Wanda 60% as the initial mask). Results are quoted in bench/README.md.

    .venv/bin/python bench/dsnot_objective.py
"""

import torch

torch.set_num_threads(2)
from calib_core.data.sources import build_calibration
from calib_core.models import decoder_blocks, load_model, prunable_modules, weight_matrix
from calib_core.prune.capture import StatsHooks, block_forward, capture_block_inputs
from calib_core.prune.dsnot import dsnot_refine
from calib_core.prune.masks import UNSTRUCTURED
from calib_core.prune.wanda import wanda_mask

lm = load_model("smollm2-135m")
cal = build_calibration("builtin:wiki", lm.tokenizer, 8, 512, 0, "concat")
with torch.inference_mode():
    inputs = capture_block_inputs(lm.model, cal.input_ids, 1, torch.device("cpu"))
    block = decoder_blocks(lm.model)[0]
    mods = prunable_modules(block)
    hooks = StatsHooks(mods, True, False, 0)
    out = torch.empty_like(inputs.hidden)
    block_forward(block, inputs, 0, out)
    hooks.remove()
    for name in ["self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"]:
        W = weight_matrix(mods[name]).float()
        st = hooks.stats[name]
        m0 = wanda_mask(W, st, 0.6, UNSTRUCTURED)
        mean = st.token_sum_mean()

        def e(m, W=W, mean=mean):  # each row's reconstruction error under mask m
            return (W * mean * m).sum(1).abs()

        for rule in ["original", "improve"]:
            m = dsnot_refine(W, m0, st, UNSTRUCTURED, 0.1, 50, 1.0, rule)
            print(name, rule, "rows|err|<=0.1: before %.2f after %.2f" % (float((e(m0)<=0.1).float().mean()), float((e(m)<=0.1).float().mean())),
                  "mean|err| %.3f -> %.3f" % (float(e(m0).mean()), float(e(m).mean())), "swaps/row %.1f" % (float((m & ~m0).sum())/W.shape[0]))
