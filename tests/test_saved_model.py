"""A saved pruned model is a deployable folder: it reloads with from_pretrained to the very model that
was pruned (checked before the folder is put in place), carries a model card saying how it was made
and the command that remakes it, states its size, and uploads to the hub only when it can."""

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from calib_core.cli import build_parser, run_spec
from calib_core.cli import main as cli_main
from calib_core.prune import PruneConfig
from calib_core.runs import RunStore
from calib_core.runs import saved as saved_model
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec, reproduce_command
from tests.tiny import random_ids, save_tiny_folder, tiny_model


@pytest.fixture
def tiny_folder(tmp_path):
    return save_tiny_folder(tmp_path / "tiny")


def _front_matter(card: str) -> dict:
    _, meta, _ = card.split("---\n", 2)
    return yaml.safe_load(meta)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_a_saved_tiny_model_reloads_to_the_pruned_masks_with_card_and_report(tmp_path, tiny_folder, pattern):
    target = tmp_path / "saved"
    job = RunSpec(model=str(tiny_folder), nsamples=2, seqlen=16, save=str(target), config=PruneConfig(device="cpu",
                  method="wanda", sparsity=0.5, pattern=pattern), evaluation=EvalSpec(windows=1))
    record = run_prune(job, store=RunStore(tmp_path / "runs.sqlite"))
    saved = record["saved"]
    assert saved["reload_check"]["checked"] and saved["reload_check"]["max_abs_logit_diff"] == 0.0
    assert saved["bytes"] == sum(p.stat().st_size for p in target.iterdir())
    assert saved["bitmask_estimate_bytes"] < saved["weights_bytes"]
    # the reloaded weights are zero exactly where the run's stored masks pruned
    weights = load_file(target / "model.safetensors")
    with np.load(record["masks"]) as masks:
        names = [k for k in masks.files if not k.endswith("#shape")]
        assert len(names) == 14  # 7 linear modules x 2 blocks
        for key in names:
            block, module = key.split("/")
            weight = weights[f"model.layers.{block}.{module}.weight"]
            kept = np.unpackbits(masks[key])[: weight.numel()].reshape(tuple(masks[key + "#shape"]))
            assert torch.equal(weight != 0, torch.from_numpy(kept.astype(bool))), key
    if pattern == "2:4":
        w = weights["model.layers.0.mlp.down_proj.weight"].reshape(-1, 4)
        assert ((w != 0).sum(dim=1) <= 2).all()
    card = (target / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and "pruned" in meta["tags"] and "wanda" in meta["tags"]
    assert "base_model" not in meta  # a local folder names no hub model
    assert record["calibration"]["fingerprint"] in card
    assert f"| builtin:wiki | {record['perplexity'][0]['ppl']:.3f} | heldout |" in card
    assert reproduce_command(job) in card and record["versions"]["git_commit"] in card
    report = json.loads((target / "calib_lab_report.json").read_text())
    assert report["run_id"] == record["run_id"] and report["saved"]["reload_check"]["checked"]
    stored = RunStore(tmp_path / "runs.sqlite").get(record["run_id"])["record"]
    assert stored["saved"]["path"] == str(target.absolute())


def test_a_folder_that_reloads_differently_is_never_put_in_place(tmp_path, monkeypatch):
    model = tiny_model()
    real_save = type(model).save_pretrained

    def save_then_drift(self, folder, **kwargs):  # the file on disk differs from the model in memory
        real_save(self, folder, **kwargs)
        with torch.no_grad():
            self.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0

    monkeypatch.setattr(type(model), "save_pretrained", save_then_drift)
    from tests.tiny import char_tokenizer

    with pytest.raises(saved_model.ReloadMismatch, match="different weights"):
        saved_model.write_model_folder(str(tmp_path / "out"), False, model, char_tokenizer(), {}, "card",
                                       random_ids(1, 32)[0])
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left either


def test_a_base_models_terms_travel_with_the_saved_folder(tmp_path):
    from tests.tiny import char_tokenizer

    terms = tmp_path / "TERMS.html"
    terms.write_text("the base model's terms")
    saved_model.write_model_folder(str(tmp_path / "out"), False, tiny_model(), char_tokenizer(), {}, "card",
                                   random_ids(1, 32)[0], extra_files=(terms,))
    assert (tmp_path / "out" / "TERMS.html").read_text() == "the base model's terms"


def test_the_reload_check_says_when_a_second_copy_does_not_fit(tmp_path, monkeypatch):
    import psutil

    model = tiny_model()
    model.save_pretrained(tmp_path)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    check = saved_model.check_reload(tmp_path, model, random_ids(1, 32)[0])
    assert not check["checked"] and "does not fit" in check["reason"]


def test_the_reproduce_command_parses_back_to_the_same_job():
    job = RunSpec(model="some/model", dtype="bfloat16", calib="set:mine", nsamples=64, seqlen=512, seed=3,
                  mode="concat", concat_separator="\n\n--\n", save="/tmp/out", strategy="activation-kmeans",
                  strategy_options={"kmeans_dim": 16, "pool_factor": 4},
                  config=PruneConfig(device="cpu", method="owl", base="sparsegpt", sparsity=0.7, owl_m=7.0,
                                     owl_lambda=0.1, sparsegpt_blocksize=64).resolved(),
                  evaluation=EvalSpec(["builtin:wiki", "builtin:news"], windows=8, protocol="wikitext2"))
    command = reproduce_command(job)
    import shlex

    args = build_parser().parse_args(shlex.split(command)[3:])
    assert run_spec(args) == job
    float32 = replace(job, dtype="float32")  # said even where it was once the CLI's default: auto is now
    assert "--dtype float32" in reproduce_command(float32)
    assert run_spec(build_parser().parse_args(shlex.split(reproduce_command(float32))[3:])) == float32


def test_push_to_hub_offline_says_so_before_the_run_and_saves_locally(tmp_path, tiny_folder, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "saved"
    code = cli_main(["prune", "--model", str(tiny_folder), "--nsamples", "2", "--seqlen", "16", "--eval-windows", "1",
                     "--save", str(target), "--push-to-hub", "me/pruned"])
    err = capsys.readouterr().err
    assert code == 1
    refusal = err.index("push: error: The Hugging Face hub is unreachable")
    assert refusal < err.index("run: run 1 started")  # said at once, before any work
    assert f"saved to {target} only" in err and "error: not uploaded to me/pruned" in err
    assert (target / "model.safetensors").exists() and (target / "README.md").exists()


def test_push_to_hub_needs_a_save_folder(capsys):
    assert cli_main(["prune", "--model", "/nonexistent", "--push-to-hub", "me/pruned"]) == 2
    assert "needs a save folder" in capsys.readouterr().err


def test_push_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo, **kwargs):
            calls.append(("create", repo, kwargs))
            return f"https://huggingface.co/{repo}"

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = saved_model.push_folder(str(tmp_path), "me/pruned", "message")
    assert url == "https://huggingface.co/me/pruned"
    assert calls[0] == ("create", "me/pruned", {"repo_type": "model", "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["repo_id"] == "me/pruned"


def test_the_bundled_model_saved_at_2_4_reloads_identically(tmp_path):
    target = tmp_path / "bundled"
    record = run_prune(RunSpec(nsamples=2, seqlen=64, save=str(target), keep_masks=False,
                       config=PruneConfig(device="cpu", method="wanda", pattern="2:4"), evaluation=EvalSpec(windows=1)),
                           store=RunStore(tmp_path / "runs.sqlite"))
    check = record["saved"]["reload_check"]
    assert check["checked"] and check["max_abs_logit_diff"] == 0.0 and check["tokens"] == 64
    meta = _front_matter((target / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    model = AutoModelForCausalLM.from_pretrained(target)
    w = model.model.layers[3].self_attn.q_proj.weight.reshape(-1, 4)
    assert ((w != 0).sum(dim=1) <= 2).all()


def test_the_results_page_shows_a_saved_model_and_how_to_remake_an_unsaved_one(tmp_path, tiny_folder):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    store = RunStore()  # the app's own store (CALIB_LAB_DATA)
    settings = dict(model=str(tiny_folder), nsamples=2, seqlen=16, evaluation=EvalSpec(windows=1), keep_masks=False)
    saved_run = run_prune(RunSpec(**settings, save=str(tmp_path / "saved")), store=store)
    unsaved_run = run_prune(RunSpec(**settings, seed=4), store=store)
    app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    app.query_params["run"] = str(saved_run["run_id"])
    app.run()
    app.switch_page("app_pages/results.py").run()
    assert not app.exception
    shown = " ".join(m.value for m in app.markdown)
    assert f"`{tmp_path / 'saved'}`" in shown and "reloads with identical weights and logits" in shown
    assert f'AutoModelForCausalLM.from_pretrained("{tmp_path / "saved"}")' in app.code[0].value
    next(s for s in app.selectbox if s.label == "Report of run").set_value(unsaved_run["run_id"]).run()
    command = app.code[0].value
    assert command.startswith("python -m calib_core prune --model") and "--seed 4" in command
    assert command.endswith("--save pruned-model")
    # remade here as a new run that saves the model
    next(t for t in app.text_input if t.label == "Save folder for the remade model").input(str(tmp_path / "remade")).run()
    next(b for b in app.button if b.label == "Remake and save this run's model").click().run()
    from calib_core.jobs import manager

    job = manager().get(app.session_state["prune_job"])
    deadline = time.time() + 300
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.error
    remade = job.result
    assert remade["saved"]["path"] == str(tmp_path / "remade") and remade["job"]["seed"] == 4
    assert remade["calibration"]["fingerprint"] == unsaved_run["calibration"]["fingerprint"]
    assert remade["overall_sparsity"] == unsaved_run["overall_sparsity"]
