"""A sweep on a Ray cluster: one task per point, with the CPUs/GPU it needs; every result is written
by the driver into the same run store as a local sweep (workers may be other machines, so they never
touch the store file). Each worker process loads the model once and restores its dense weights per
point, like the local runner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import CalibLabError, MissingDependencyError, PruningCancelled
from ..files import atomic_write_bytes
from ..runs.events import PipelineEvent
from .sweeps import SweepGrid, SweepPoint, SweepSummary, plan_sweep

RAY_MISSING = ("Ray is not installed, so the sweep runs locally. To run it on a Ray cluster: pip install 'ray[default]' "
               "on this machine and every node, then pass --ray auto (the cluster this machine belongs to, or a new "
               "local one) or --ray ADDRESS (e.g. ray://head:10001).")
_WORKER_MODELS: dict = {}  # per Ray worker process: (model, dtype) -> (LoadedModel, dense state)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _run_point(grid: SweepGrid, point: SweepPoint, threads: int) -> dict:
    """Runs inside a Ray worker: the record of one point, its masks and channel statistics included as bytes."""
    import torch

    from ..models import load_model
    from ..runs.pipeline import run_prune
    from ..runs.store import RunStore

    torch.set_num_threads(threads)
    key = (grid.model, grid.dtype)
    if key not in _WORKER_MODELS:
        loaded = load_model(grid.model, dtype=grid.dtype)
        _WORKER_MODELS[key] = (loaded, {k: v.detach().clone() for k, v in loaded.model.state_dict().items()})
    loaded, dense = _WORKER_MODELS[key]
    loaded.model.load_state_dict(dense)
    with tempfile.TemporaryDirectory() as scratch:  # the worker's own throwaway store
        record = run_prune(grid.spec(point), store=RunStore(Path(scratch) / "runs.sqlite"), loaded=loaded)
        if record.get("masks"):
            record["mask_bytes"] = Path(record.pop("masks")).read_bytes()
        if record.get("channel_stats"):
            record["channel_bytes"] = Path(record["channel_stats"]["path"]).read_bytes()
    return record


def _connect(address: str):
    import ray

    if ray.is_initialized():
        return ray
    root = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k.startswith("CALIB_LAB_")}
    runtime_env = {"py_modules": [str(root)], "env_vars": env}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env=runtime_env, log_to_driver=False)
        except ConnectionError:  # no cluster running here: start a local one
            ray.init(runtime_env=runtime_env, log_to_driver=False, include_dashboard=False)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def run_sweep_on_ray(grid: SweepGrid, address: str = "auto", store=None, on_event=None, cancel=None,
                     cpus_per_task: int = 1, gpus_per_task: float | None = None, points=None) -> SweepSummary:
    """Same contract as sweeps.run_sweep: finished points are skipped, failures recorded, cancel stops
    scheduling and cancels the tasks still pending."""
    from ..runs import RunStore

    if not ray_available():
        raise MissingDependencyError(RAY_MISSING)
    emit = on_event or (lambda event: None)
    store = store or RunStore()
    todo, summary = plan_sweep(grid, store, points, emit, where=" on Ray")
    if not todo:
        return summary
    ray = _connect(address)
    if gpus_per_task is None:  # a GPU per task where the cluster has GPUs, unless the points ask for CPU
        wants_gpu = all(p.config.device != "cpu" for p in todo)
        gpus_per_task = 1 if wants_gpu and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(_run_point).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)
    pending = {task.remote(grid, point, cpus_per_task): point for point in todo}
    finished = 0
    while pending:
        if cancel is not None and cancel.is_set():
            for ref in pending:
                ray.cancel(ref)
            raise PruningCancelled(f"Sweep {grid.name} cancelled on Ray; {summary.ran} points ran, rerun to resume.")
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            point = pending.pop(ref)
            finished += 1
            run_id = store.start(grid.model, point.config.as_dict(), point.calibration, grid.name, point.key)
            try:
                record = ray.get(ref)
            except Exception as exc:  # the task's own error travels inside a RayTaskError
                cause = getattr(exc, "cause", None) or exc
                store.finish(run_id, "failed", error=str(cause))
                if not isinstance(cause, CalibLabError):
                    summary.failed.append(f"{point.label()}: {type(cause).__name__}: {cause}")
                else:
                    summary.failed.append(f"{point.label()}: {cause}")
                continue
            record["run_id"] = run_id
            masks = record.pop("mask_bytes", None)
            if masks is not None:
                path = store.mask_path(run_id)
                atomic_write_bytes(path, masks)
                record["masks"] = str(path)
            channels = record.pop("channel_bytes", None)
            if channels is not None:
                record["channel_stats"]["path"] = str(atomic_write_bytes(store.channel_path(run_id), channels))
            store.finish(run_id, "finished", record)
            summary.ran += 1
            summary.run_ids.append(run_id)
            emit(PipelineEvent("sweep", f"point {finished}/{len(todo)} done on Ray: {point.label()}",
                               {"key": point.key, "run_id": run_id}))
    return summary
