"""One pruning run end to end: load -> calibration samples -> prune -> perplexity -> run record.
The CLI and the app both drive this, so a run means the same thing everywhere."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import assets
from .data.sources import DEFAULT_CONCAT_SEPARATOR, build_calibration, check_mode
from .errors import PruningCancelled
from .paths import streamed_scratch_dir
from .prune import PruneConfig

if TYPE_CHECKING:
    from .runs import RunRecord


@dataclass
class PruneJob:
    model: str = assets.DEFAULT_MODEL
    dtype: str = "float32"
    trust_remote_code: bool = False
    calib: str | None = "builtin:wiki"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    mode: str = "document"  # document | concat | document_pad (data/sources.py)
    concat_separator: str = DEFAULT_CONCAT_SEPARATOR  # concat mode: what joins the documents
    text_column: str | None = None
    config: PruneConfig = field(default_factory=PruneConfig)
    eval: list[str] = field(default_factory=lambda: ["builtin:wiki"])
    ppl_protocol: str = "heldout"  # heldout | wikitext2 (metrics/perplexity.py)
    eval_seqlen: int | None = None  # default: seqlen
    eval_windows: int | None = None
    save: str | None = None  # a folder for the pruned model, its tokenizer and the report
    overwrite: bool = False  # replace a non-empty save folder
    push_to_hub: str | None = None  # OWNER/NAME: upload the saved folder (needs `save`)
    stream: bool = False  # read each block from disk for its turn (models larger than memory)
    report: str | None = None  # a JSON file for the report
    cloze_items: int = 0  # offline zero-shot proxy (metrics/cloze.py) on each eval source; 0 = skip
    keep_masks: bool = True  # for mask agreement between runs (metrics/agreement.py)
    lm_eval_tasks: list[str] | None = None  # zero-shot accuracy via lm-eval (metrics/zeroshot.py); ["paper"] = paper's set
    lm_eval_limit: int | None = None  # examples per task (None: all)
    lm_eval_include: str | None = None  # a local lm-eval task folder


def job_of_record(record: dict) -> PruneJob:
    """The PruneJob a stored run record was made by (fields a newer or older version lacks: defaults)."""
    from dataclasses import fields

    known = {f.name for f in fields(PruneJob)} - {"config"}
    config_fields = {f.name for f in fields(PruneConfig)}
    config = PruneConfig(**{k: v for k, v in record["config"].items() if k in config_fields})
    return PruneJob(**{k: v for k, v in record["job"].items() if k in known}, config=config)


@dataclass
class PipelineEvent:
    """Stage messages around the engine's own events: run, load, calibration, estimate, eval (one
    perplexity source starts), ppl, cloze, zeroshot, saved; `at` is when (seconds since the epoch)."""

    stage: str
    message: str
    data: dict = field(default_factory=dict)
    kind: str = "pipeline"
    at: float = field(default_factory=time.time)


def check_outputs(job: PruneJob) -> None:
    """Fail before any work when the job's save folder or report file cannot be written."""
    from .errors import OutputError
    from .files import check_output_file, check_output_folder

    if job.push_to_hub and not job.save:
        raise OutputError("Uploading to the hub needs a save folder (--save DIR): the folder is what is uploaded.")
    if job.save:
        check_output_folder(job.save, job.overwrite)
    if job.report:
        check_output_file(job.report)


def run_prune_job(job: PruneJob, on_event=None, cancel=None, store=None, loaded=None, sweep: str | None = None,
                  point_key: str | None = None) -> RunRecord:
    """Run a job and return its report; the run store records it as running, then finished (only once
    the saved folder and report are in place), failed or cancelled. `loaded` (a LoadedModel of
    job.model holding dense weights) skips loading: sweeps load once and restore the dense weights
    between points."""
    from .metrics.perplexity import check_protocol
    from .runs import RunStore

    emit = on_event or (lambda event: None)
    config = job.config.resolved()  # a bad config or destination fails before anything loads
    check_mode(job.mode)
    check_protocol(job.ppl_protocol)
    check_outputs(job)
    store = store or RunStore()
    too_big = None if job.stream or loaded is not None else _too_big_for_memory(job, emit)
    if too_big:  # said at once, and recorded: the run's job says --stream
        job = replace(job, stream=True)
        emit(PipelineEvent("load", f"note: {too_big}: streaming its blocks from disk"))
    push_refused = _push_refusal(job)
    if push_refused:  # said at once; the run goes on and saves locally
        emit(PipelineEvent("push", f"error: {push_refused} The model will be saved to {job.save} only.",
                           {"error": push_refused}))
    run_id = store.start(job.model, config.as_dict(), job.calib, sweep, point_key)
    emit(PipelineEvent("run", f"run {run_id} started", {"run_id": run_id}))
    return _recorded(store, run_id, lambda: _run(job, config, run_id, emit, cancel, store, loaded, push_refused))


def _model_folder(spec: str, emit) -> Path | None:
    """The folder a bundled alias (converted on first use, saying so) or a local folder spec names; None
    for a hub id."""
    if spec in assets.BUNDLED:
        return assets.bundled_model_dir(spec, lambda message: emit(PipelineEvent("load", message)))
    folder = Path(spec).expanduser()
    return folder if folder.is_dir() else None


def _too_big_for_memory(job: PruneJob, emit) -> str | None:
    """Why the job's model cannot be held in RAM (its weights in the job's dtype, with a fifth spare for
    activations and statistics), when its files are on disk; None when it fits or is not local."""
    import json

    import psutil

    from .models import DTYPES

    folder = _model_folder(job.model, emit)
    files = list(folder.glob("*.safetensors")) if folder is not None else []
    if not files:
        return None
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    stored = DTYPES.get(config.get("dtype") or config.get("torch_dtype"), DTYPES["float32"]).itemsize
    weights = sum(f.stat().st_size for f in files) * DTYPES[job.dtype].itemsize / stored
    available = psutil.virtual_memory().available
    if weights * 1.2 <= available:
        return None
    return (f"the model's weights ({weights / 2**30:.1f} GiB in {job.dtype}) do not fit in the {available / 2**30:.1f} "
            "GiB of free memory")


def _push_refusal(job: PruneJob) -> str | None:
    """Why the job's upload cannot happen (offline, no token, a bad repo id), or None."""
    from .saved_model import HubPushError, check_push

    if not job.push_to_hub:
        return None
    try:
        check_push(job.push_to_hub)
    except HubPushError as exc:
        return str(exc)
    return None


def _recorded(store, run_id: int, work) -> RunRecord:
    """`work()`'s record, with the run finished in the store as its outcome says."""
    try:
        record = work()
    except (PruningCancelled, KeyboardInterrupt) as exc:
        store.finish(run_id, "cancelled", error=str(exc) or "interrupted")
        raise
    except Exception as exc:
        store.finish(run_id, "failed", error=str(exc))
        raise
    store.finish(run_id, "finished", record)
    return record


def _run(job: PruneJob, config: PruneConfig, run_id: int, emit, cancel, store, loaded,
         push_refused: str | None = None) -> RunRecord:
    from .devices import reset_peak_memory, resolve_device
    from .models import describe_model, load_model
    from .prune.engine import Pruner
    from .prune.memory import check_memory
    from .runs import run_record

    reset_peak_memory(resolve_device(config.device))  # each run (a sweep's point too) reports its own peak
    t = time.perf_counter()
    streamed = None
    if job.stream:
        loaded, streamed = _open_streamed(job, emit)
    elif loaded is None:
        loaded = load_model(job.model, dtype=job.dtype, trust_remote_code=job.trust_remote_code,
                            on_message=lambda message: emit(PipelineEvent("load", message)))
    timings = {"load_model": time.perf_counter() - t}
    for note in loaded.notes:
        emit(PipelineEvent("load", note))
    if job.save:
        from .files import check_free_space

        check_free_space(job.save, sum(p.numel() * p.element_size() for p in loaded.model.parameters()))
    info = describe_model(loaded.model)
    masks_path = store.path.parent / "masks" / f"run-{run_id}.npz"
    with _streamed_output(job) as out, _streamed_masks(job, masks_path) as add_masks:
        sink = _BlockSink(out, streamed, add_masks) if streamed is not None else None
        pruner = Pruner(loaded.model, config, emit, cancel, streamed=streamed, on_block_pruned=sink)
        calibration = None
        t = time.perf_counter()
        if job.calib:
            # Refuse what cannot fit before reading any text (the engine checks again with the real shape).
            estimate = pruner.memory_estimate(job.nsamples, job.seqlen)
            check_memory(estimate, pruner.device)
            calibration = build_calibration(job.calib, loaded.tokenizer, job.nsamples, job.seqlen, job.seed,
                                            job.mode, job.text_column, concat_separator=job.concat_separator)
            emit(PipelineEvent("calibration", f"calibration {calibration.fingerprint}", calibration.describe()))
            for note in calibration.notes:
                emit(PipelineEvent("calibration", f"note: {note}"))
        timings["calibration"] = time.perf_counter() - t
        if calibration is not None:
            estimate = pruner.memory_estimate(calibration.nsamples, calibration.seqlen)
            emit(PipelineEvent("estimate", f"memory estimate: {estimate.describe()}", estimate.as_dict()))
        result = pruner.run(calibration.input_ids if calibration is not None else None)
        timings.update({f"prune_{k}": v for k, v in result.seconds.items()})
        if sink is not None:  # the pruned model is now the folder: evaluate it from there, block by block
            sink.finish(loaded.tokenizer)
            streamed.read_from(out)
        evaluation = evaluate_model(loaded, job.eval, job.eval_seqlen or job.seqlen, job.eval_windows,
                                    job.ppl_protocol, config.device, job.cloze_items, job.lm_eval_tasks,
                                    job.lm_eval_limit, job.lm_eval_include, emit, cancel, streamed=streamed)
        timings.update(evaluation.timings)
        record = run_record(job.model, info, calibration, result, evaluation.perplexities, timings, loaded.notes)
        record.update(evaluation.extras)
        record["run_id"] = run_id
        record["job"] = {k: v for k, v in asdict(job).items() if k != "config"}
        if job.keep_masks:
            from .metrics.agreement import save_masks

            record["masks"] = str(masks_path if sink is not None else save_masks(loaded.model, masks_path))
        if sink is not None and job.save:
            record["saved"] = sink.describe(job, record, calibration, loaded.tokenizer)
    _write_outputs(job, loaded, record, calibration, emit, push_refused)
    return record


def _open_streamed(job: PruneJob, emit):
    """The job's model with its blocks left on disk, and a LoadedModel view of it (tokenizer, notes)."""
    from transformers import AutoTokenizer

    from .errors import ConfigError, ModelLoadError
    from .models import DTYPES, LoadedModel, family_of
    from .prune.streaming import StreamedModel

    if job.cloze_items or job.lm_eval_tasks is not None:
        raise ConfigError("A streamed run measures perplexity only (block by block): drop --cloze/--lm-eval, or "
                          "evaluate the saved folder afterwards.")
    folder = _model_folder(job.model, emit)
    if folder is None:
        raise ModelLoadError(f"Streaming reads the model's files from disk: download '{job.model}' first (`hf download "
                             f"{job.model} --local-dir DIR`) and pass the folder.")
    streamed = StreamedModel(folder, DTYPES[job.dtype], job.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=job.trust_remote_code)
    notes = [assets.BUNDLED[job.model].caveat] if job.model in assets.BUNDLED else []
    notes.append("streamed: each decoder block was read from disk for its turn and written out after it")
    return LoadedModel(streamed.model, tokenizer, job.model, str(folder), family_of(streamed.model), notes), streamed


def _streamed_output(job: PruneJob):
    """Where a streamed run writes the pruned model: the save folder (appearing whole or not at all), or
    a temporary folder when not saving. Nothing for a run in memory."""
    from .files import atomic_folder

    if not job.stream:
        return contextlib.nullcontext()
    if job.save:
        return atomic_folder(job.save, job.overwrite)
    return _scratch_folder()


def _streamed_masks(job: PruneJob, path: Path):
    """Where a streamed run writes its masks block by block (the whole model's never in memory at once):
    `add(arrays)` into the run's mask file, which appears when the run ends; None otherwise."""
    from .metrics.agreement import mask_archive

    return mask_archive(path) if job.stream and job.keep_masks else contextlib.nullcontext()


def _scratch_folder():
    """A folder in the cache for a streamed run that saves nothing, removed when the run ends."""
    from .files import scratch_folder

    return scratch_folder(streamed_scratch_dir(), "streamed-model")


class _BlockSink:
    """Receives each pruned block of a streamed run: writes its shard and its masks."""

    def __init__(self, folder, streamed, add_masks=None):
        from .prune.streaming import STREAMABLE_LAYERS
        from .saved_model import ShardWriter

        outside = [n for n in streamed.files if not n.startswith(STREAMABLE_LAYERS + ".")]
        self.writer = ShardWriter(folder, len(streamed.blocks) + len(outside))
        self.streamed, self.add_masks = streamed, add_masks

    def __call__(self, index: int, tensors: dict) -> None:
        from .metrics.agreement import block_masks

        self.writer.add(tensors)
        if self.add_masks is not None:
            self.add_masks(block_masks(index, self.streamed.blocks[index]))

    def finish(self, tokenizer) -> None:
        for name, tensor in self.streamed.other_tensors():
            self.writer.add({name: tensor})
            del tensor  # not alive while the next one (an embedding-sized matrix) is read
        self.writer.finish(self.streamed.model, tokenizer)

    def describe(self, job: PruneJob, record: dict, calibration, tokenizer) -> dict:
        """The model card and report in the streamed folder; what the record keeps about it."""
        from .model_card import calibration_excerpts, model_card
        from .saved_model import complete_folder

        saved = {"path": str(Path(job.save).expanduser().absolute()), "format": "safetensors (dense, sharded per block)",
                 "weights_bytes": self.writer.total_bytes, "bitmask_estimate_bytes": None,
                 "reload_check": {"checked": False, "reason": "a streamed run never holds the whole model to compare "
                                                              "with; its perplexity was measured from the saved files"}}
        complete_folder(self.writer.folder, saved, record,
                        model_card(record, job, calibration_excerpts(calibration, tokenizer)), _license_files(job))
        return saved


DENSE = "dense"  # the method name of a baseline run: the unpruned model, evaluated


def run_dense_baseline(job: PruneJob, on_event=None, cancel=None, store=None) -> RunRecord:
    """Evaluate the unpruned model exactly as `job` evaluates its pruned one (sources, protocol,
    seqlen, windows), recorded as a finished run of method 'dense' at sparsity 0: the baseline the
    Results page draws next to the pruned runs."""
    from .models import describe_model, load_model
    from .metrics.perplexity import check_protocol
    from .runs import RunStore, eval_record

    emit = on_event or (lambda event: None)
    check_protocol(job.ppl_protocol)
    store = store or RunStore()
    run_id = store.start(job.model, {"method": DENSE, "sparsity": 0.0, "pattern": "unstructured"}, None)
    emit(PipelineEvent("run", f"run {run_id} started (dense baseline)", {"run_id": run_id}))

    def evaluate() -> RunRecord:
        t = time.perf_counter()
        loaded = load_model(job.model, dtype=job.dtype, trust_remote_code=job.trust_remote_code)
        evaluation = evaluate_model(loaded, job.eval, job.eval_seqlen or job.seqlen, job.eval_windows,
                                    job.ppl_protocol, job.config.device, on_event=emit, cancel=cancel)
        record = eval_record(job.model, describe_model(loaded.model), evaluation.perplexities,
                             {"load_model": time.perf_counter() - t, **evaluation.timings}, loaded.notes)
        record.update(run_id=run_id, job={"model": job.model, "dtype": job.dtype, "eval": job.eval,
                                          "ppl_protocol": job.ppl_protocol, "eval_seqlen": job.eval_seqlen or job.seqlen,
                                          "eval_windows": job.eval_windows})
        return record

    return _recorded(store, run_id, evaluate)


@dataclass
class Evaluation:
    perplexities: list  # PerplexityResult per source
    extras: dict  # run-record entries: "cloze" and "zeroshot" when asked for
    timings: dict


def evaluate_model(loaded, sources: list[str], seqlen: int, windows: int | None = None, protocol: str = "heldout",
                   device: str = "auto", cloze_items: int = 0, lm_eval_tasks: list[str] | None = None,
                   lm_eval_limit: int | None = None, lm_eval_include: str | None = None, on_event=None,
                   cancel=None, streamed=None) -> Evaluation:
    """Perplexity on each source, then the cloze proxy and lm-eval accuracies asked for, each result
    emitted as it comes. A pruning run and `python -m calib_core eval` evaluate through this.
    `streamed` (a StreamedModel; `loaded` then only gives the tokenizer): perplexity block by block."""
    from functools import partial

    from .metrics.perplexity import perplexity, streamed_perplexity

    measure = partial(streamed_perplexity, streamed) if streamed is not None else partial(perplexity, loaded.model)

    emit = on_event or (lambda event: None)
    perplexities, extras = [], {}
    for number, spec in enumerate(sources, 1):
        if cancel is not None and cancel.is_set():
            raise PruningCancelled("Cancelled before evaluation.")
        emit(PipelineEvent("eval", f"perplexity on {spec} ({number} of {len(sources)})",
                           {"source": spec, "number": number, "total": len(sources)}))
        ppl = measure(loaded.tokenizer, spec, seqlen=seqlen, max_windows=windows, device=device, protocol=protocol)
        perplexities.append(ppl)
        if ppl.placement != "whole model" and streamed is None:
            emit(PipelineEvent("eval", f"note: the whole model does not fit in the free memory of {device}: "
                                       f"perplexity on {spec} was measured {ppl.placement}"))
        emit(PipelineEvent("ppl", f"ppl {spec}: {ppl.ppl:.3f} ({protocol}, {ppl.windows} x {ppl.seqlen} tokens, "
                                  f"{ppl.seconds:.1f} s)", ppl.as_dict()))
    timings = {"eval": sum(p.seconds for p in perplexities)}
    if cloze_items:
        from .metrics.cloze import cloze_accuracy

        t = time.perf_counter()
        extras["cloze"] = []
        with _on_job_device(loaded.model, device, "cloze", "the cloze proxy", emit):
            for spec in sources:
                accuracy = cloze_accuracy(loaded.model, loaded.tokenizer, spec, items=cloze_items)
                extras["cloze"].append(accuracy.as_dict())
                emit(PipelineEvent("cloze", f"cloze {spec}: acc {accuracy.acc:.3f}, acc_norm {accuracy.acc_norm:.3f} "
                                            f"({accuracy.items} items)", accuracy.as_dict()))
        timings["cloze"] = time.perf_counter() - t
    if lm_eval_tasks is not None:
        from .metrics.zeroshot import lm_eval_accuracy

        t = time.perf_counter()
        with _on_job_device(loaded.model, device, "zeroshot", "lm-eval", emit):  # HFLM runs where the model is
            zeroshot = lm_eval_accuracy(loaded.model, loaded.tokenizer, lm_eval_tasks, lm_eval_limit,
                                        include_path=lm_eval_include)
        timings["lm_eval"] = time.perf_counter() - t
        for task in zeroshot.tasks:
            emit(PipelineEvent("zeroshot", f"{task.task}: {task.reported} {task.value:.4f}", asdict(task)))
        emit(PipelineEvent("zeroshot", f"mean: {zeroshot.mean:.4f}", {"mean": zeroshot.mean}))
        extras["zeroshot"] = zeroshot.as_dict()
    return Evaluation(perplexities, extras, timings)


@contextlib.contextmanager
def _on_job_device(model, device: str, stage: str, what: str, emit):
    """The whole model on the job's device while `what` runs (then back on the CPU); where it does
    not fit, `what` runs where the model is, and the run's events say so."""
    from .devices import describe_free, resolve_device, whole_model_on

    target = resolve_device(device)
    with whole_model_on(model, target) as where:
        if where != target:
            emit(PipelineEvent(stage, f"note: the whole model does not fit on {target} ({describe_free(target)}): "
                                      f"{what} runs on {where}"))
        yield where


def _write_outputs(job: PruneJob, loaded, record: dict, calibration, emit, push_refused: str | None = None) -> None:
    """The saved folder (model, tokenizer, report, model card) appears whole, checked to reload to the
    same model, or not at all; then the upload and the report file. What was saved goes in the record."""
    from .runs import write_json

    if job.save and not job.stream:  # a streamed run wrote its folder block by block
        from .model_card import calibration_excerpts, model_card
        from .saved_model import RELOAD_TOKENS, write_model_folder

        # The logits compared on reload: calibration text, or fixed token ids when there is none.
        tokens = (calibration.input_ids[0] if calibration is not None
                  else torch.arange(RELOAD_TOKENS) % loaded.model.config.vocab_size)
        card = model_card(record, job, calibration_excerpts(calibration, loaded.tokenizer))
        t = time.perf_counter()
        record["saved"] = write_model_folder(job.save, job.overwrite, loaded.model, loaded.tokenizer, record, card,
                                             tokens, job.trust_remote_code, _license_files(job))
        record["timings"]["save"] = time.perf_counter() - t  # with the reload check
    if job.save:
        saved = record["saved"]
        check = saved["reload_check"]
        emit(PipelineEvent("saved", f"saved pruned model to {job.save} ({saved['bytes'] / 2**20:.1f} MiB; "
                                    + ("reloads with identical weights and logits" if check["checked"]
                                       else f"reload check skipped: {check['reason']}") + ")", saved))
        if job.push_to_hub:
            record["push"] = _push(job, push_refused, emit)
    if job.report:
        write_json(job.report, record)
        emit(PipelineEvent("saved", f"report written to {job.report}", {"path": job.report}))


def _license_files(job: PruneJob) -> tuple[Path, ...]:
    """The base model's licence terms, which travel with every model saved from it."""
    return tuple(filter(None, [assets.license_file(job.model)]))


def _push(job: PruneJob, refused: str | None, emit) -> dict:
    from .saved_model import HubPushError, push_folder

    if refused:
        return {"repo": job.push_to_hub, "error": refused}
    try:
        url = push_folder(job.save, job.push_to_hub, f"Calibration Lab: {job.config.method} pruned model")
    except HubPushError as exc:
        emit(PipelineEvent("push", f"error: {exc}", {"error": str(exc)}))
        return {"repo": job.push_to_hub, "error": str(exc)}
    emit(PipelineEvent("push", f"uploaded to {url}", {"url": url}))
    return {"repo": job.push_to_hub, "url": url}
