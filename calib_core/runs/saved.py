"""A pruned model as a deployable folder: weights (Hugging Face safetensors), tokenizer, run report and
model card, written to a temporary sibling, checked to reload with the same weights and logits, and
only then renamed into place; its size on disk; an optional upload to the Hugging Face hub.

Why dense safetensors and no sparse encoding: compressed-tensors dropped its sparse formats (bitmask,
2:4) in 0.15, and transformers 5 (which needs compressed-tensors >= 0.15) and vLLM no longer read
them. A sparse folder would load nowhere current, so we write the one format every loader reads and
report what a bitmask encoding would have saved.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import assets
from ..errors import CalibLabError
from .card import calibration_excerpts, model_card
from .events import PipelineEvent
from .spec import RunSpec
from .store import write_json

REPORT_NAME = "calib_lab_report.json"
CARD_NAME = "README.md"
RELOAD_TOKENS = 256  # logits compared on this many tokens


class ReloadMismatch(CalibLabError):
    """The saved folder does not give back the pruned model: it is not put in place."""


class HubPushError(CalibLabError):
    """An upload to the Hugging Face hub is impossible (offline, no token) or failed."""


def folder_bytes(folder: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def bitmask_bytes(model: torch.nn.Module) -> int:
    """What the weights would take with every Linear weight stored as its nonzero values plus one bit
    per position (the compressed-tensors bitmask layout), everything else dense."""
    total = 0
    seen = set()
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    for tensor in model.parameters():
        if id(tensor) in seen:  # tied weights are stored once
            continue
        seen.add(id(tensor))
        if id(tensor) in linear_weights:
            total += int(torch.count_nonzero(tensor)) * tensor.element_size() + -(-tensor.numel() // 8)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def check_reload(folder: Path, model: torch.nn.Module, tokens: torch.Tensor, trust_remote_code: bool = False) -> dict:
    """Load `folder` with `AutoModelForCausalLM.from_pretrained` and compare with the in-memory `model`:
    every parameter and the logits on `tokens` must be identical (same weights, dtype and CPU kernels
    give bit-identical results). Skipped, and said so, when a second copy would not fit in RAM."""
    import psutil
    from transformers import AutoModelForCausalLM

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    available = psutil.virtual_memory().available
    if weights * 1.3 > available:
        return {"checked": False, "reason": f"a second copy ({weights / 2**30:.1f} GiB) does not fit in the "
                                            f"{available / 2**30:.1f} GiB of free RAM"}
    device = next(model.parameters()).device
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(model.parameters()).dtype,
                                                    trust_remote_code=trust_remote_code).to(device).eval()
    try:
        mine, theirs = dict(model.named_parameters()), dict(reloaded.named_parameters())
        differing = sorted(name for name, p in mine.items() if name not in theirs or not torch.equal(p, theirs[name]))
        if differing:
            raise ReloadMismatch(f"The saved folder reloads with different weights ({len(differing)} tensors, e.g. "
                                 f"{differing[0]}); it was not put in place.")
        ids = tokens.reshape(1, -1)[:, :RELOAD_TOKENS].to(device)
        with torch.no_grad():
            expected, got = model(ids).logits, reloaded(ids).logits
        difference = float((expected - got).abs().max())
        if not torch.equal(expected, got):
            raise ReloadMismatch(f"The saved folder reloads with the same weights but different logits (max |diff| "
                                 f"{difference:.3g} on {ids.shape[1]} tokens); it was not put in place.")
    finally:
        del reloaded
    zeros = sum(int((p == 0).sum()) for p in mine.values())
    return {"checked": True, "tokens": int(ids.shape[1]), "max_abs_logit_diff": difference, "tensors": len(mine),
            "zeros": zeros}


def write_model_folder(target: str, overwrite: bool, model: torch.nn.Module, tokenizer, record: dict, card: str,
                       tokens: torch.Tensor, trust_remote_code: bool = False, extra_files: tuple[Path, ...] = ()) -> dict:
    """The folder appears whole, reloading to the same model, or not at all; `extra_files` (a base
    model's licence terms) are copied in. Returns what the run record keeps about it."""
    from ..files import atomic_folder

    with atomic_folder(target, overwrite) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        reload = check_reload(folder, model, tokens, trust_remote_code)
        saved = {"path": str(Path(target).expanduser().absolute()), "format": "safetensors (dense)",
                 "weights_bytes": sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")),
                 "bitmask_estimate_bytes": bitmask_bytes(model), "reload_check": reload}
        complete_folder(folder, saved, record, card, extra_files)
    return saved


def complete_folder(folder: Path, saved: dict, record: dict, card: str, extra_files: tuple[Path, ...] = ()) -> None:
    """The model card, `extra_files` (a base model's licence terms) and the run report with `saved` in a
    saved folder; then `saved["bytes"]`, the folder's size (which the report inside cannot state)."""
    import shutil

    (folder / CARD_NAME).write_text(card)
    for extra in extra_files:
        shutil.copy(extra, folder)
    write_json(folder / REPORT_NAME, {**record, "saved": saved})
    saved["bytes"] = folder_bytes(folder)


def check_push(repo: str) -> None:
    """Fail at once when an upload to `repo` cannot work: the hub unreachable, or no token."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub import hub_reachable

    if not repo or repo.count("/") != 1:
        raise HubPushError(f"'{repo}' is not a hub repository id: write it as OWNER/NAME.")
    if not hub_reachable():
        raise HubPushError("The Hugging Face hub is unreachable from this machine (offline, or HF_HUB_OFFLINE is "
                           "set), so nothing can be uploaded.")
    try:
        HfApi().whoami()
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise HubPushError(f"No usable Hugging Face token ({exc}); log in with `hf auth login` first.") from exc


def push_folder(folder: str, repo: str, message: str) -> str:
    """Upload the saved folder (weights, tokenizer, card, report) to `repo`; returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo, repo_type="model", commit_message=message)
    except (HfHubHTTPError, OSError) as exc:
        raise HubPushError(f"Upload to {repo} failed: {exc}. The model stays saved in {folder}.") from exc
    return str(url)



class ShardWriter:
    """A Hugging Face folder written piece by piece (a streamed prune): one safetensors shard per decoder
    block as it is pruned, then one per remaining tensor (embeddings, norms, head: one at a time in
    memory), the index, the config and the tokenizer. `AutoModelForCausalLM.from_pretrained` loads it."""

    def __init__(self, folder: Path, shards: int):
        self.folder, self.shards, self.written = Path(folder), shards, 0
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        self.written += 1
        name = f"model-{self.written:05d}-of-{self.shards:05d}.safetensors"
        save_file(tensors, self.folder / name, metadata={"format": "pt"})
        self.weight_map.update({key: name for key in tensors})
        self.total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self, model: torch.nn.Module, tokenizer) -> None:
        import json

        if self.written != self.shards:
            raise RuntimeError(f"{self.written} of {self.shards} shards written")  # a bug, not a user error
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        model.config.save_pretrained(self.folder)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.folder)
        tokenizer.save_pretrained(self.folder)


def license_files(spec: RunSpec) -> tuple[Path, ...]:
    """The base model's licence terms, which travel with every model saved from it."""
    return tuple(filter(None, [assets.license_file(spec.model)]))


def write_outputs(spec: RunSpec, loaded, record: dict, calibration, emit, push_refused: str | None = None) -> None:
    """The saved folder (model, tokenizer, report, model card) appears whole, checked to reload to the
    same model, or not at all; then the upload and the report file. What was saved goes in the record."""
    import time

    if spec.save and not spec.stream:  # a streamed run wrote its folder block by block
        # The logits compared on reload: calibration text, or fixed token ids when there is none.
        tokens = (calibration.input_ids[0] if calibration is not None
                  else torch.arange(RELOAD_TOKENS) % loaded.model.config.vocab_size)
        card = model_card(record, spec, calibration_excerpts(calibration, loaded.tokenizer))
        t = time.perf_counter()
        record["saved"] = write_model_folder(spec.save, spec.overwrite, loaded.model, loaded.tokenizer, record, card,
                                             tokens, spec.trust_remote_code, license_files(spec))
        record["timings"]["save"] = time.perf_counter() - t  # with the reload check
    if spec.save:
        saved = record["saved"]
        check = saved["reload_check"]
        emit(PipelineEvent("saved", f"saved pruned model to {spec.save} ({saved['bytes'] / 2**20:.1f} MiB; "
                                    + ("reloads with identical weights and logits" if check["checked"]
                                       else f"reload check skipped: {check['reason']}") + ")", saved))
        if spec.push_to_hub:
            record["push"] = _push(spec, push_refused, emit)
    if spec.report:
        write_json(spec.report, record)
        emit(PipelineEvent("saved", f"report written to {spec.report}", {"path": spec.report}))


def push_refusal(spec: RunSpec) -> str | None:
    """Why the run's upload cannot happen (offline, no token, a bad repo id), or None."""
    if not spec.push_to_hub:
        return None
    try:
        check_push(spec.push_to_hub)
    except HubPushError as exc:
        return str(exc)
    return None


def _push(spec: RunSpec, refused: str | None, emit) -> dict:
    if refused:
        return {"repo": spec.push_to_hub, "error": refused}
    try:
        url = push_folder(spec.save, spec.push_to_hub, f"Calibration Lab: {spec.config.method} pruned model")
    except HubPushError as exc:
        emit(PipelineEvent("push", f"error: {exc}", {"error": str(exc)}))
        return {"repo": spec.push_to_hub, "error": str(exc)}
    emit(PipelineEvent("push", f"uploaded to {url}", {"url": url}))
    return {"repo": spec.push_to_hub, "url": url}
