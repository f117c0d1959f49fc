"""Zero-shot accuracy through lm-evaluation-harness, on the pruned model in memory (no save/reload).

The paper's tasks download their datasets from the Hugging Face hub, so this path needs a network;
offline it fails with a clear message and points to the builtin cloze proxy (cloze.py). A cloze task
can also be written as a local lm-eval task folder (`write_cloze_task`), which runs through the same
bridge with no network.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import hub
from ..errors import ConfigError, MissingDependencyError, SourceError

# The task set of Ji et al. (ICLR 2025): boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge (zero-shot; MMLU is 5-shot)
PAPER_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge")
INSTALL = "pip install lm_eval==0.4.13"


@dataclass
class TaskAccuracy:
    task: str
    acc: float | None
    acc_norm: float | None
    acc_stderr: float | None
    reported: str  # which of acc / acc_norm `value` is: acc_norm where the task defines it (lm-eval convention)
    value: float
    samples: int | None


@dataclass
class ZeroShotResult:
    tasks: list[TaskAccuracy]
    mean: float  # mean of the reported metric over tasks
    num_fewshot: int
    limit: int | None
    lm_eval_version: str

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_tasks(names: list[str] | None) -> list[str]:
    """'paper' (or nothing) means the paper's commonsense set."""
    out: list[str] = []
    for name in names or ["paper"]:
        out += list(PAPER_TASKS) if name == "paper" else [name]
    return list(dict.fromkeys(out))


def _parse(task: str, metrics: dict, samples: int | None) -> TaskAccuracy:
    acc, acc_norm = metrics.get("acc,none"), metrics.get("acc_norm,none")
    if acc is None and acc_norm is None:
        raise ConfigError(f"lm-eval task '{task}' reports no acc/acc_norm (metrics: {sorted(metrics)}); only "
                          "multiple-choice accuracy tasks are supported.")
    reported = "acc_norm" if acc_norm is not None else "acc"
    return TaskAccuracy(task, acc, acc_norm, metrics.get(f"{reported}_stderr,none"), reported,
                        float(acc_norm if acc_norm is not None else acc), samples)


def lm_eval_accuracy(model, tokenizer, tasks: list[str] | None = None, limit: int | None = None, batch_size: int = 8,
                     num_fewshot: int = 0, include_path: str | None = None) -> ZeroShotResult:
    """Run lm-eval tasks on `model` as it is now (e.g. right after pruning)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise MissingDependencyError(f"Zero-shot accuracy needs lm-evaluation-harness: {INSTALL}.") from exc
    names = resolve_tasks(tasks)
    if include_path is None and not hub.hub_reachable():
        raise SourceError("lm-eval tasks download their datasets from the Hugging Face hub, which is not reachable "
                          "from here. Offline, use the builtin cloze proxy (prune --cloze N), or a local task folder "
                          "(include_path, e.g. one written by write_cloze_task).")
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"Unknown lm-eval task(s) {unknown}; e.g. {', '.join(PAPER_TASKS)}.")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit,
                                         task_manager=manager, log_samples=False)
    except (ConnectionError, OSError) as exc:
        raise SourceError(f"lm-eval could not load a task's dataset: {exc}") from exc
    counts = output.get("n-samples", {})
    parsed = [_parse(t, output["results"][t], (counts.get(t) or {}).get("effective")) for t in names]
    return ZeroShotResult(parsed, sum(p.value for p in parsed) / len(parsed), num_fewshot, limit,
                          getattr(lm_eval, "__version__", "unknown"))


def write_cloze_task(folder: str | Path, spec: str, tokenizer, items: int = 100, seed: int = 0) -> str:
    """The builtin cloze items of `spec` as a local lm-eval multiple-choice task; returns its name."""
    from .cloze import cloze_items

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = "calib_lab_cloze_" + spec.replace(":", "_").replace("/", "_")
    with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
        for item in cloze_items(spec, tokenizer, items, seed=seed):
            record = {"context": tokenizer.decode(item.context),
                      "choices": [tokenizer.decode(c) for c in item.candidates], "label": item.answer}
            handle.write(json.dumps(record) + "\n")
    config = {
        "task": name, "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str((folder / f"{name}.jsonl").resolve())}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}", "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is valid YAML
    return name
