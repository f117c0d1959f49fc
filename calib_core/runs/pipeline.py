"""One pruning run end to end: load -> calibration samples -> prune -> evaluation -> run record, and
the dense baseline measured the same way. The CLI, the app's jobs and sweeps all drive this, so a
run means the same thing everywhere."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

import psutil

from ..data.documents import parse_source
from ..data.sources import check_mode
from ..data.strategies import RANDOM, STRATEGIES, build_strategy_calibration, check_strategy, describe_strategy
from ..devices import reset_peak_memory, resolve_device
from ..errors import ConfigError, PruningCancelled
from ..files import check_free_space, npz_archive
from ..metrics.agreement import save_masks
from ..metrics.perplexity import check_protocol
from ..models import DTYPES, describe_model, load_model, resolve_dtype
from ..prune import PruneConfig
from ..prune.engine import Pruner
from ..prune.memory import check_memory
from ..prune.stats import CHANNEL_KINDS
from .evaluate import evaluate_model, on_job_device
from .events import PipelineEvent
from .saved import push_refusal, write_outputs
from .spec import RunSpec, check_outputs
from .store import RunRecord, RunStore, eval_record, run_record
from .streamed import BlockSink, model_folder, open_streamed, streamed_masks, streamed_output

DENSE = "dense"  # the method name of a baseline run: the unpruned model, evaluated


def run_prune(spec: RunSpec, on_event=None, cancel=None, store=None, loaded=None, sweep: str | None = None,
              point_key: str | None = None, selections: dict | None = None, origin: str = "library") -> RunRecord:
    """Run `spec` and return its record (`origin`: who started it, store.ORIGINS); the run store records it as running, then finished (only once
    the saved folder and report are in place), failed or cancelled. `loaded` (a LoadedModel of
    spec.model holding dense weights) skips loading: sweeps load once and restore the dense weights
    between points, and keep `selections` (a strategy's windows, reused by points that share them)."""
    emit = on_event or (lambda event: None)
    config = spec.config.resolved()  # a bad config or destination fails before anything loads
    spec = replace(spec, dtype=resolve_dtype(spec.dtype, config.device))  # the record states what ran
    check_mode(spec.mode)
    check_protocol(spec.evaluation.protocol)
    check_outputs(spec)
    store = store or RunStore()
    too_big = None if spec.stream or loaded is not None else _too_big_for_memory(spec, emit)
    if too_big:  # said at once, and recorded: the run's spec says --stream
        spec = replace(spec, stream=True)
        emit(PipelineEvent("load", f"note: {too_big}: streaming its blocks from disk"))
    check_calibration_choice(spec)  # after the streaming decision: a model-based strategy cannot stream
    push_refused = push_refusal(spec)
    if push_refused:  # said at once; the run goes on and saves locally
        emit(PipelineEvent("push", f"error: {push_refused} The model will be saved to {spec.save} only.",
                           {"error": push_refused}))
    run_id = store.start(spec.model, config.as_dict(), spec.calib, sweep, point_key, origin)
    emit(PipelineEvent("run", f"run {run_id} started", {"run_id": run_id}))
    return _recorded(store, run_id, lambda: _run(spec, config, run_id, emit, cancel, store, loaded, push_refused,
                                                 selections))


def check_calibration_choice(spec: RunSpec) -> None:
    """The calibration source and strategy, checked before any model loads."""
    if not spec.calib or not spec.config.needs_calibration:
        return
    parse_source(spec.calib)
    check_strategy(spec.strategy, spec.strategy_options)
    if spec.stream and STRATEGIES[spec.strategy].needs_model:
        raise ConfigError(f"Strategy {spec.strategy} scores or generates with the whole dense model in memory; "
                          "it cannot run on a streamed model (--stream). Use random or unique-tokens.")


def _too_big_for_memory(spec: RunSpec, emit) -> str | None:
    """Why the run's model cannot be held in RAM (its weights in the run's dtype, with a fifth spare for
    activations and statistics), when its files are on disk; None when it fits or is not local."""
    folder = model_folder(spec.model, emit)
    files = list(folder.glob("*.safetensors")) if folder is not None else []
    if not files:
        return None
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    stored = DTYPES.get(config.get("dtype") or config.get("torch_dtype"), DTYPES["float32"]).itemsize
    weights = sum(f.stat().st_size for f in files) * DTYPES[spec.dtype].itemsize / stored
    available = psutil.virtual_memory().available
    if weights * 1.2 <= available:
        return None
    return (f"the model's weights ({weights / 2**30:.1f} GiB in {spec.dtype}) do not fit in the {available / 2**30:.1f} "
            "GiB of free memory")


def _recorded(store, run_id: int, work) -> RunRecord:
    """`work()`'s record, with the run finished in the store as its outcome says."""
    try:
        record = work()
    except (PruningCancelled, KeyboardInterrupt) as exc:
        store.finish(run_id, "cancelled", error=str(exc) or "interrupted")
        store.discard_files(run_id)
        raise
    except Exception as exc:
        store.finish(run_id, "failed", error=str(exc))
        store.discard_files(run_id)
        raise
    store.finish(run_id, "finished", record)
    return record


def _run(spec: RunSpec, config: PruneConfig, run_id: int, emit, cancel, store, loaded,
         push_refused: str | None = None, selections: dict | None = None) -> RunRecord:
    reset_peak_memory(resolve_device(config.device))  # each run (a sweep's point too) reports its own peak
    t = time.perf_counter()
    streamed = None
    if spec.stream:
        loaded, streamed = open_streamed(spec, emit)
    elif loaded is None:
        loaded = load_model(spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                            on_message=lambda message: emit(PipelineEvent("load", message)))
    timings = {"load_model": time.perf_counter() - t}
    for note in loaded.notes:
        emit(PipelineEvent("load", note))
    if spec.save:
        check_free_space(spec.save, sum(p.numel() * p.element_size() for p in loaded.model.parameters()))
    info = describe_model(loaded.model)
    masks_path, channels = store.mask_path(run_id), ChannelSink(store.channel_path(run_id), config)
    with streamed_output(spec) as out, streamed_masks(spec, masks_path) as add_masks, channels:
        sink = BlockSink(out, streamed, add_masks) if streamed is not None else None
        pruner = Pruner(loaded.model, config, emit, cancel, streamed=streamed, on_block_pruned=sink,
                        on_channels=channels.add if channels.active else None)
        t = time.perf_counter()
        calibration = _calibrate(spec, pruner, loaded.tokenizer, emit, selections)
        timings["calibration"] = time.perf_counter() - t
        result = pruner.run(calibration.input_ids if calibration is not None else None)
        timings.update({f"prune_{k}": v for k, v in result.seconds.items()})
        if sink is not None:  # the pruned model is now the folder: evaluate it from there, block by block
            sink.finish(loaded.tokenizer)
            streamed.read_from(out)
        evaluation = evaluate_model(loaded, spec.evaluation, spec.eval_seqlen, config.device, emit, cancel,
                                    streamed=streamed)
        timings.update(evaluation.timings)
        record = run_record(spec.model, info, calibration, result, evaluation.perplexities, timings, loaded.notes)
        record.update(evaluation.extras)
        record["run_id"] = run_id
        record["job"] = spec.as_record()
        if spec.keep_masks:
            record["masks"] = str(masks_path if sink is not None else save_masks(loaded.model, masks_path))
        if channels.kinds:
            record["channel_stats"] = channels.describe()
        if sink is not None and spec.save:
            record["saved"] = sink.describe(spec, record, calibration, loaded.tokenizer)
    write_outputs(spec, loaded, record, calibration, emit, push_refused)
    return record


class ChannelSink:
    """Where a calibrated run's per-channel input statistics go, block by block (prune/stats.CHANNEL_KINDS):
    one small .npz per run beside the masks; nothing for a method that reads no data."""

    def __init__(self, path: Path, config: PruneConfig):
        self.path, self.active, self.kinds = path, config.needs_calibration, set()
        self._archive = self._add = None

    def __enter__(self):
        if self.active:
            self._archive = npz_archive(self.path)
            self._add = self._archive.__enter__()
        return self

    def __exit__(self, *exc):
        return self._archive.__exit__(*exc) if self._archive is not None else False

    def add(self, index: int, arrays: dict) -> None:
        self.kinds.update(key.rsplit("/", 1)[1] for key in arrays)
        self._add(arrays)

    def describe(self) -> dict:
        kinds = [k for k in CHANNEL_KINDS if k in self.kinds]
        return {"path": str(self.path), "kinds": kinds, "definitions": {k: CHANNEL_KINDS[k] for k in kinds}}


def _calibrate(spec: RunSpec, pruner: Pruner, tokenizer, emit, selections: dict | None = None):
    """The run's calibration samples (None for a method that needs none), refused before any text is
    read when the estimate cannot fit (the engine checks again with the real shape). A model-based
    strategy scores or generates on the dense model here, before the pruner touches it."""
    if not spec.calib:
        return None
    check_memory(pruner.memory_estimate(spec.nsamples, spec.seqlen), pruner.device)
    if spec.strategy != RANDOM:
        emit(PipelineEvent("calibration", f"choosing calibration windows by {describe_strategy(spec.strategy, spec.strategy_options)}"))
    needs_model = STRATEGIES[spec.strategy].needs_model
    # A model-based strategy scores or generates with the whole dense model on the run's device when it fits.
    placed = (on_job_device(pruner.model, spec.config.device, "calibration", f"the {spec.strategy} selection", emit)
              if needs_model else contextlib.nullcontext())
    with placed:
        calibration = build_strategy_calibration(
            spec.calib, tokenizer, spec.nsamples, spec.seqlen, spec.seed, spec.mode, spec.strategy,
            spec.strategy_options, pruner.model if needs_model else None, spec.text_column, spec.concat_separator,
            selections)
    emit(PipelineEvent("calibration", f"calibration {calibration.fingerprint}", calibration.describe()))
    for note in calibration.notes:
        emit(PipelineEvent("calibration", f"note: {note}"))
    estimate = pruner.memory_estimate(calibration.nsamples, calibration.seqlen)
    emit(PipelineEvent("estimate", f"memory estimate: {estimate.describe()}", estimate.as_dict()))
    return calibration


def run_dense_baseline(spec: RunSpec, on_event=None, cancel=None, store=None, origin: str = "library") -> RunRecord:
    """Evaluate the unpruned model exactly as `spec` evaluates its pruned one (sources, protocol,
    seqlen, windows), recorded as a finished run of method 'dense' at sparsity 0: the baseline the
    Results page draws next to the pruned runs."""
    emit = on_event or (lambda event: None)
    check_protocol(spec.evaluation.protocol)
    spec = replace(spec, dtype=resolve_dtype(spec.dtype, spec.config.device))
    store = store or RunStore()
    run_id = store.start(spec.model, {"method": DENSE, "sparsity": 0.0, "pattern": "unstructured"}, None,
                         origin=origin)
    emit(PipelineEvent("run", f"run {run_id} started (dense baseline)", {"run_id": run_id}))

    def evaluate() -> RunRecord:
        t = time.perf_counter()
        loaded = load_model(spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code)
        evaluation = evaluate_model(loaded, spec.evaluation, spec.eval_seqlen, spec.config.device, emit, cancel)
        record = eval_record(spec.model, describe_model(loaded.model), evaluation.perplexities,
                             {"load_model": time.perf_counter() - t, **evaluation.timings}, loaded.notes)
        measured = spec.evaluation.as_record()
        record.update(run_id=run_id, job={"model": spec.model, "dtype": spec.dtype, "eval": measured["eval"],
                                          "ppl_protocol": measured["ppl_protocol"], "eval_seqlen": spec.eval_seqlen,
                                          "eval_windows": measured["eval_windows"]})
        return record

    return _recorded(store, run_id, evaluate)
