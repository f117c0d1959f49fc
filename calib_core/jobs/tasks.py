"""The app's background tasks, as module-level functions a job worker can run by name
(jobs.JobManager.submit pickles the function and its arguments). Each takes the job first: its
`emit` is the event sink and its `cancel_event` the cancel token."""

from __future__ import annotations

from ..data.selfgen import GenerationConfig, generate_set, save_generated
from ..experiments.sweeps import SweepGrid, run_sweep
from ..metrics.similarity import compare_sources
from ..models import load_model, place_for_inference
from ..runs.pipeline import run_dense_baseline, run_prune
from ..runs.spec import RunSpec
from ..runs.store import RunStore


def prune(job, spec: RunSpec):
    return run_prune(spec, job.emit, job.cancel_event, origin="app")


def dense_baseline(job, spec: RunSpec):
    return run_dense_baseline(spec, job.emit, job.cancel_event, origin="app")


def self_generate(job, model_spec: str, model_options: dict, device: str, config: GenerationConfig, set_name: str):
    loaded = load_model(model_spec, **model_options, device=device)  # a quantized load lands on `device`
    place_for_inference(loaded.model, device)
    result = generate_set(loaded.model, loaded.tokenizer, config, job.emit, job.cancel_event, model_spec)
    save_generated(set_name, result)
    result.metadata["saved_as"] = f"set:{set_name}"  # for any tab that shows the job
    return result


def similarity(job, model_spec: str, model_options: dict, device: str, specs: list[str], settings: dict):
    """compare_sources on `specs` with `settings` (its keyword arguments); each set's mean scores are
    recorded in the run store."""
    loaded = load_model(model_spec, **model_options, device=device)  # a quantized load lands on `device`
    place_for_inference(loaded.model, device)
    table, summary = compare_sources(loaded.model, loaded.tokenizer, specs, on_event=job.emit,
                                     cancel=job.cancel_event, **settings)
    RunStore().record_similarity(model_spec, table)  # for the Results page's similarity-vs-perplexity chart
    return table, summary


def sweep(job, grid: SweepGrid):
    return run_sweep(grid, None, job.emit, job.cancel_event)


def demo(job, grid: SweepGrid):
    from ..experiments.demo import run_demo

    return run_demo(grid, None, job.emit, job.cancel_event)


def advise(job, model_spec: str, model_options: dict, device: str, candidates: list, target: str, settings):
    """The advisor's proxy table of `candidates` (studies.advisor.Candidate) for `target`."""
    from ..runs.events import PipelineEvent
    from ..studies.advisor import proxy_table

    loaded = load_model(model_spec, **model_options, device=device)
    place_for_inference(loaded.model, device)
    return proxy_table(loaded, candidates, target, settings,
                       on_event=lambda message: job.emit(PipelineEvent("advise", message)))


def advise_verify(job, model_spec: str, dtype: str, top, target: str, settings, eval_windows: int):
    """Prune with the advisor's top candidates and measure each on the target (studies.advisor.verify)."""
    from ..studies.advisor import verify

    return verify(model_spec, dtype, top, target, settings, eval_windows, on_event=job.emit, cancel=job.cancel_event,
                  origin="app")
