"""A model measured as an EvalSpec says: perplexity on each source, then the cloze proxy and lm-eval
accuracies asked for, each result emitted as it comes. A pruning run, its dense baseline and
`python -m calib_core eval` all measure through `evaluate_model`."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from functools import partial

from ..devices import describe_free, resolve_device, whole_model_on
from ..errors import PruningCancelled
from ..metrics.cloze import cloze_accuracy
from ..metrics.perplexity import perplexity, streamed_perplexity
from ..metrics.zeroshot import lm_eval_accuracy
from .events import PipelineEvent
from .spec import EvalSpec


@dataclass
class Evaluation:
    perplexities: list  # PerplexityResult per source
    extras: dict  # run-record entries: "cloze" and "zeroshot" when asked for
    timings: dict


def evaluate_model(loaded, spec: EvalSpec, seqlen: int, device: str = "auto", on_event=None, cancel=None,
                   streamed=None) -> Evaluation:
    """`loaded` (a LoadedModel) measured as `spec` says, perplexity windows of `seqlen` tokens (the
    spec's own seqlen, when set, is resolved by the caller). `streamed` (a StreamedModel; `loaded`
    then only gives the tokenizer): perplexity block by block."""
    measure = partial(streamed_perplexity, streamed) if streamed is not None else partial(perplexity, loaded.model)
    emit = on_event or (lambda event: None)
    perplexities, extras = [], {}
    sources = spec.sources
    for number, source in enumerate(sources, 1):
        if cancel is not None and cancel.is_set():
            raise PruningCancelled("Cancelled before evaluation.")
        emit(PipelineEvent("eval", f"perplexity on {source} ({number} of {len(sources)})",
                           {"source": source, "number": number, "total": len(sources)}))
        ppl = measure(loaded.tokenizer, source, seqlen=seqlen, max_windows=spec.windows, device=device,
                      protocol=spec.protocol)
        perplexities.append(ppl)
        if ppl.placement != "whole model" and streamed is None:
            emit(PipelineEvent("eval", f"note: the whole model does not fit in the free memory of {device}: "
                                       f"perplexity on {source} was measured {ppl.placement}"))
        emit(PipelineEvent("ppl", f"ppl {source}: {ppl.ppl:.3f} ({spec.protocol}, {ppl.windows} x {ppl.seqlen} tokens, "
                                  f"{ppl.seconds:.1f} s)", ppl.as_dict()))
    timings = {"eval": sum(p.seconds for p in perplexities)}
    if spec.cloze_items:
        t = time.perf_counter()
        extras["cloze"] = []
        with on_job_device(loaded.model, device, "cloze", "the cloze proxy", emit):
            for source in sources:
                accuracy = cloze_accuracy(loaded.model, loaded.tokenizer, source, items=spec.cloze_items)
                extras["cloze"].append(accuracy.as_dict())
                emit(PipelineEvent("cloze", f"cloze {source}: acc {accuracy.acc:.3f}, acc_norm "
                                            f"{accuracy.acc_norm:.3f} ({accuracy.items} items)", accuracy.as_dict()))
        timings["cloze"] = time.perf_counter() - t
    if spec.lm_eval_tasks is not None:
        t = time.perf_counter()
        with on_job_device(loaded.model, device, "zeroshot", "lm-eval", emit):  # HFLM runs where the model is
            zeroshot = lm_eval_accuracy(loaded.model, loaded.tokenizer, spec.lm_eval_tasks, spec.lm_eval_limit,
                                        include_path=spec.lm_eval_include)
        timings["lm_eval"] = time.perf_counter() - t
        for task in zeroshot.tasks:
            emit(PipelineEvent("zeroshot", f"{task.task}: {task.reported} {task.value:.4f}", asdict(task)))
        emit(PipelineEvent("zeroshot", f"mean: {zeroshot.mean:.4f}", {"mean": zeroshot.mean}))
        extras["zeroshot"] = zeroshot.as_dict()
    return Evaluation(perplexities, extras, timings)


@contextlib.contextmanager
def on_job_device(model, device: str, stage: str, what: str, emit):
    """The whole model on the job's device while `what` runs (then back on the CPU); where it does
    not fit, `what` runs where the model is, and the run's events say so."""
    target = resolve_device(device)
    with whole_model_on(model, target) as where:
        if where != target:
            emit(PipelineEvent(stage, f"note: the whole model does not fit on {target} ({describe_free(target)}): "
                                      f"{what} runs on {where}"))
        yield where
