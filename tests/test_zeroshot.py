"""The lm-evaluation-harness bridge: offline through a local cloze task, clear errors otherwise."""

import sys

import pytest

from calib_core import hub
from calib_core.cli import main as cli_main
from calib_core.errors import ConfigError, MissingDependencyError, SourceError
from calib_core.metrics.zeroshot import PAPER_TASKS, lm_eval_accuracy, resolve_tasks, write_cloze_task
from calib_core.prune import PruneConfig
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.tiny import save_tiny_folder


def test_task_names():
    assert resolve_tasks(None) == list(PAPER_TASKS)
    assert resolve_tasks(["paper", "boolq", "lambada"]) == list(PAPER_TASKS) + ["lambada"]


@pytest.mark.bundled
def test_lm_eval_scores_the_bundled_model_like_our_cloze(tmp_path):
    from calib_core.metrics.cloze import cloze_accuracy
    from calib_core.models import load_model

    lm = load_model("smollm2-135m")
    name = write_cloze_task(tmp_path / "tasks", "builtin:wiki", lm.tokenizer, items=30)
    result = lm_eval_accuracy(lm.model, lm.tokenizer, [name], include_path=str(tmp_path / "tasks"))
    (task,) = result.tasks
    assert task.samples == 30 and task.reported == "acc_norm" and result.mean == task.acc_norm
    ours = cloze_accuracy(lm.model, lm.tokenizer, "builtin:wiki", items=30)
    # same items, scored by lm-eval on re-tokenized text: far above chance (0.25), close to our own scorer
    assert task.acc > 0.5 and abs(task.acc - ours.acc) <= 0.15


def test_pipeline_and_cli_record_lm_eval(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    from calib_core.models import load_model

    tasks = tmp_path / "tasks"
    name = write_cloze_task(tasks, "builtin:wiki", load_model(str(folder)).tokenizer, items=6)
    record = run_prune(RunSpec(model=str(folder), nsamples=2, seqlen=16, config=PruneConfig(device="cpu",
                       method="wanda"), keep_masks=False, evaluation=EvalSpec(sources=["builtin:wiki"], windows=1,
                       lm_eval_tasks=[name], lm_eval_include=str(tasks))), store=RunStore(tmp_path / "runs.sqlite"))
    (task,) = record["zeroshot"]["tasks"]
    assert task["task"] == name and task["samples"] == 6 and 0 <= task["acc"] <= 1
    assert record["zeroshot"]["lm_eval_version"] == "0.4.13" and "lm_eval" in record["timings"]
    assert cli_main(["eval", "--model", str(folder), "--no-eval", "--lm-eval", name, "--lm-eval-include",
                     str(tasks)]) == 0
    assert f"{name}: acc_norm" in capsys.readouterr().out


def test_clear_errors(tmp_path, monkeypatch):
    folder = save_tiny_folder(tmp_path / "tiny")
    from calib_core.models import load_model

    lm = load_model(str(folder))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SourceError, match="hub.*not reachable.*cloze"):
        lm_eval_accuracy(lm.model, lm.tokenizer, ["boolq"])
    with pytest.raises(ConfigError, match="Unknown lm-eval task"):
        lm_eval_accuracy(lm.model, lm.tokenizer, ["no_such_task"], include_path=str(tmp_path))
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(MissingDependencyError, match="pip install lm_eval"):
        lm_eval_accuracy(lm.model, lm.tokenizer, ["boolq"])
