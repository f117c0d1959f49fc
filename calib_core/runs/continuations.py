"""Dense and pruned side by side: one prompt continued by the dense model and by the pruned models of
runs (greedy, the same number of new tokens, the same seed), so that a perplexity gap becomes text.

A run's pruned model comes from, in this order: its saved folder; the dense model with its stored masks
applied, exact for methods that change no kept weight (all but SparseGPT-based ones); or a remake from
its record (its calibration fingerprint and settings give the same masks and weights), whose time is
estimated from the run's own timings before it starts.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import NotEnoughDataError
from ..metrics.agreement import stored_kept
from ..models import decoder_blocks, load_model, prunable_modules, weight_matrix
from ..prune.methods import mask_method

DENSE_LABEL = "dense"


@dataclass
class Continuation:
    label: str
    text: str  # the new tokens only, decoded
    source: str  # dense | saved folder | stored masks | remade
    seconds: float  # to get the model and generate


def how_made(record: dict) -> str:
    """Where `pruned_model` gets this run's model: saved folder, stored masks or remade."""
    if record.get("saved") and Path(record["saved"]["path"]).is_dir():
        return "saved folder"
    config = record["config"]
    if record.get("masks") and Path(record["masks"]).is_file() and \
            not mask_method(config["method"], config.get("base")).updates_weights:
        return "stored masks"
    return "remade"


def remake_seconds(record: dict) -> float:
    """About how long remaking the run takes: what its own load, calibration and prune took."""
    timings = record.get("timings") or {}
    return sum(float(timings.get(k) or 0) for k in ("load_model", "calibration", "prune_total"))


def pruned_model(record: dict, dense=None, on_event=None):
    """The run's pruned model (a LoadedModel) and how it was made. `dense` (a LoadedModel of the run's model
    and dtype) is copied, never changed."""
    how = how_made(record)
    dtype = (record.get("job") or {}).get("dtype", "float32")
    if how == "saved folder":
        return load_model(record["saved"]["path"], dtype=dtype), how
    dense = dense or load_model(record["model"]["spec"], dtype=dtype)
    loaded = replace(dense, model=copy.deepcopy(dense.model))
    if how == "stored masks":
        apply_masks(loaded.model, record["masks"])
        return loaded, how
    from .pipeline import run_prune
    from .spec import spec_of_record
    from .store import RunStore

    made = spec_of_record(record)
    spec = replace(made, save=None, report=None, push_to_hub=None, keep_masks=False, stream=False,  # one window:
                   evaluation=replace(made.evaluation, sources=made.evaluation.sources[:1], windows=1,  # not used
                                      cloze_items=0, lm_eval_tasks=None))
    with tempfile.TemporaryDirectory() as scratch:  # the remake is not a new run of the user's store
        run_prune(spec, on_event, store=RunStore(Path(scratch) / "runs.sqlite"), loaded=loaded)
    return loaded, how


def apply_masks(model, path) -> None:
    """Zero every weight the run's stored masks did not keep."""
    with np.load(path) as masks:
        for index, block in enumerate(decoder_blocks(model)):
            for name, module in prunable_modules(block).items():
                key = f"{index}/{name}"
                if key not in masks.files:
                    raise NotEnoughDataError(f"The stored masks at {path} have no {key}: not a run of this model.")
                kept = stored_kept(masks, key)
                weight = weight_matrix(module)
                if tuple(weight.shape) != kept.shape:
                    raise NotEnoughDataError(f"The stored mask of {key} is {kept.shape}, the model's weight "
                                             f"{tuple(weight.shape)}.")
                with torch.no_grad():
                    weight.masked_fill_(torch.from_numpy(~kept), 0)


@torch.inference_mode()
def continue_text(loaded, prompt: str, new_tokens: int = 40, seed: int = 0) -> str:
    """Greedy continuation of `prompt` (the seed fixes anything a model samples internally)."""
    torch.manual_seed(seed)
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    model = loaded.model
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, pad_token_id=loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id)
    return loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def side_by_side(records: list[dict], prompt: str, new_tokens: int = 40, seed: int = 0, dense=None,
                 on_event=None) -> list[Continuation]:
    """The dense model's continuation, then each run's. The runs must share a model and dtype."""
    if not prompt.strip():
        raise NotEnoughDataError("Write a prompt to continue.")
    models = {(r["model"]["spec"], (r.get("job") or {}).get("dtype", "float32")) for r in records}
    if len(models) != 1:
        raise NotEnoughDataError("Side by side compares runs of one model and dtype; these differ: "
                                 + ", ".join(f"{m} ({d})" for m, d in sorted(models)))
    spec, dtype = models.pop()
    started = time.perf_counter()
    dense = dense or load_model(spec, dtype=dtype)
    out = [Continuation(DENSE_LABEL, continue_text(dense, prompt, new_tokens, seed), "dense", time.perf_counter() - started)]
    for record in records:
        started = time.perf_counter()
        loaded, how = pruned_model(record, dense, on_event)
        text = continue_text(loaded, prompt, new_tokens, seed)
        out.append(Continuation(f"run {record.get('run_id')}", text, how, time.perf_counter() - started))
        del loaded
    return out
