"""Moved after 0.1.0: the run is now `calib_core.runs` (spec, pipeline, evaluate). This shim keeps the old
names for one release, for scripts and for jobs queued before an upgrade (their pickles name
`calib_core.pipeline.PruneJob`): `PruneJob` -> `runs.spec.RunSpec` (evaluation fields now in its
`EvalSpec`), `run_prune_job` -> `runs.pipeline.run_prune`, `job_of_record` -> `runs.spec.spec_of_record`.
`evaluate_model` takes an EvalSpec now and is not kept here."""

from __future__ import annotations

import warnings

from .runs.events import PipelineEvent
from .runs.pipeline import DENSE, run_dense_baseline, run_prune as run_prune_job
from .runs.spec import RECORD_NAMES, EvalSpec, RunSpec, check_outputs, spec_of_record as job_of_record

__all__ = ["DENSE", "PipelineEvent", "PruneJob", "check_outputs", "job_of_record", "run_dense_baseline",
           "run_prune_job"]


class PruneJob(RunSpec):
    """A RunSpec that also takes the evaluation fields flat, as earlier releases did (`eval=`,
    `ppl_protocol=`, `eval_seqlen=`, `eval_windows=`, `cloze_items=`, `lm_eval_*=`)."""

    def __init__(self, *args, **kwargs):
        warnings.warn("calib_core.pipeline.PruneJob is now calib_core.runs.spec.RunSpec (evaluation settings in "
                      "its EvalSpec)", DeprecationWarning, stacklevel=2)
        flat = {name: kwargs.pop(name) for name in RECORD_NAMES.values() if name in kwargs}
        if flat:
            kwargs["evaluation"] = EvalSpec.of_record(flat)
        super().__init__(*args, **kwargs)
