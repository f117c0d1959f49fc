"""Streaming: a model whose decoder blocks are read from disk one at a time prunes to the same masks and
perplexity as the model in memory, and writes a normal Hugging Face folder."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from calib_core.cli import main as cli_main
from calib_core.errors import UnsupportedModelError
from calib_core.prune import PruneConfig
from calib_core.prune.memory import estimate_memory
from calib_core.prune.streaming import StreamedModel
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import EvalSpec, RunSpec
from tests.tiny import save_tiny_folder


def _masks(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: np.unpackbits(data[k]) for k in data.files if not k.endswith("#shape")}


def _agreement(a: dict, b: dict) -> float:
    same = sum(int((a[k] == b[k]).sum()) for k in a)
    return same / sum(a[k].size for k in a)


def _both(tmp_path, model: str, method: str, **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = RunStore(tmp_path / "runs.sqlite")
    records = {}
    for stream in (False, True):
        job = RunSpec(model=model, stream=stream, save=str(tmp_path / f"saved-{stream}"),
                      config=PruneConfig(device="cpu", method=method, sparsity=0.5), **settings)
        records[stream] = run_prune(job, store=store)
    return records


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_a_streamed_tiny_prune_matches_the_in_memory_one_and_saves_a_loadable_folder(tmp_path, family):
    folder = save_tiny_folder(tmp_path / "tiny", family)
    records = _both(tmp_path, str(folder), "wanda", nsamples=4, seqlen=32, evaluation=EvalSpec(windows=2))
    memory, streamed = records[False], records[True]
    assert _agreement(_masks(memory["masks"]), _masks(streamed["masks"])) == 1.0
    assert round(streamed["perplexity"][0]["ppl"], 4) == round(memory["perplexity"][0]["ppl"], 4)
    assert streamed["overall_sparsity"] == memory["overall_sparsity"]
    with np.load(memory["channel_stats"]["path"]) as a, np.load(streamed["channel_stats"]["path"]) as b:
        assert a.files == b.files and len(a.files) > 0  # written block by block as it streamed, the same values
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved-True")
    in_memory_save = AutoModelForCausalLM.from_pretrained(tmp_path / "saved-False")
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), in_memory_save.state_dict().items()):
        assert torch.equal(a, b), name
    assert "streamed" in streamed["notes"][-1] and not streamed["saved"]["reload_check"]["checked"]
    assert (tmp_path / "saved-True" / "README.md").exists()


def test_the_bundled_model_streams_to_the_same_masks_and_perplexity(tmp_path):
    settings = dict(nsamples=4, seqlen=128, evaluation=EvalSpec(windows=2), keep_masks=True)
    wanda = _both(tmp_path / "wanda", "smollm2-135m", "wanda", **settings)
    assert _agreement(_masks(wanda[False]["masks"]), _masks(wanda[True]["masks"])) == 1.0
    assert round(wanda[True]["perplexity"][0]["ppl"], 4) == round(wanda[False]["perplexity"][0]["ppl"], 4)
    sparsegpt = _both(tmp_path / "sparsegpt", "smollm2-135m", "sparsegpt", **settings)
    assert _agreement(_masks(sparsegpt[False]["masks"]), _masks(sparsegpt[True]["masks"])) >= 0.999
    assert round(sparsegpt[True]["perplexity"][0]["ppl"], 4) == round(sparsegpt[False]["perplexity"][0]["ppl"], 4)


def test_streaming_needs_only_one_block_in_memory_and_refuses_other_layouts(tmp_path):
    streamed = StreamedModel(save_tiny_folder(tmp_path / "tiny"))
    embedding = streamed.model.get_input_embeddings()
    assert all(p.is_meta for block in streamed.blocks for p in block.parameters()) and embedding.weight.is_meta
    assert not streamed.model.model.norm.weight.is_meta  # small tensors stay; the embedding only when needed
    with streamed.embeddings():
        assert not streamed.model.get_input_embeddings().weight.is_meta
    assert streamed.model.get_input_embeddings().weight.is_meta
    needs = frozenset()
    full = estimate_memory(AutoModelForCausalLM.from_pretrained(tmp_path / "tiny"), 2, 16, needs, torch.device("cpu"))
    stream = estimate_memory(streamed.model, 2, 16, needs, torch.device("cpu"), streaming=True)
    one_block = sum(p.numel() * 4 for p in streamed.blocks[0].parameters())
    assert full.weights - stream.weights == one_block  # 2 blocks in memory, 1 when streamed
    with pytest.raises(UnsupportedModelError, match="Streaming supports"):
        StreamedModel(save_tiny_folder(tmp_path / "gpt2", "gpt2"))


def test_a_loaded_block_is_read_into_memory_of_its_own_not_a_mapping_of_the_shard(tmp_path):
    """A view of a memory-mapped shard keeps the file's pages resident and turns every pruned page into a
    private copy: the block's weights must be plain memory, and nothing of the file stays mapped."""
    folder = save_tiny_folder(tmp_path / "tiny")
    streamed = StreamedModel(folder)
    streamed.load_block(1, torch.device("cpu"))
    mapped = [line for line in open("/proc/self/maps") if str(folder) in line]
    assert mapped == []
    weight = streamed.blocks[1].mlp.down_proj.weight
    assert not weight.is_meta and weight.abs().sum() > 0
    streamed.release_block(1)
    assert all(p.is_meta for p in streamed.blocks[1].parameters())


def test_a_streamed_scratch_model_is_removed_after_the_run_and_after_a_kill(tmp_path, monkeypatch):
    from calib_core import housekeeping
    from calib_core.files import TMP_PREFIX
    from calib_core.paths import streamed_scratch_dir

    monkeypatch.setenv("CALIB_LAB_CACHE", str(tmp_path / "cache"))
    folder = save_tiny_folder(tmp_path / "tiny")
    run_prune(RunSpec(model=str(folder), stream=True, nsamples=2, seqlen=16, evaluation=EvalSpec(windows=1)),
                  store=RunStore(tmp_path / "runs.sqlite"))
    assert list(streamed_scratch_dir().iterdir()) == []  # written, evaluated, removed
    killed = streamed_scratch_dir() / f"{TMP_PREFIX}999999999-1-streamed-model-abc"  # a writer that is gone
    (killed / "model-00001-of-00002.safetensors").parent.mkdir(parents=True)
    (killed / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    housekeeping.clean_stale_files()
    assert not killed.exists()


def test_the_cli_streams_with_a_flag_and_a_hub_id_is_refused_offline(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    assert cli_main(["prune", "--model", str(folder), "--stream", "--nsamples", "2", "--seqlen", "16",
                     "--eval-windows", "1", "--save", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    assert cli_main(["prune", "--model", "someone/model", "--stream", "--nsamples", "2", "--seqlen", "16"]) == 2
    assert "download 'someone/model' first" in capsys.readouterr().err


def test_a_model_that_does_not_fit_in_memory_is_streamed_and_the_run_says_so(tmp_path, monkeypatch):
    import psutil

    folder = save_tiny_folder(tmp_path / "tiny")
    weights = (folder / "model.safetensors").stat().st_size
    real = psutil.virtual_memory  # free memory for the streamed run (one block at a time), not for the whole model
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": int(weights * 1.1),
                                                                              "total": real().total})())
    events = []
    record = run_prune(RunSpec(model=str(folder), nsamples=2, seqlen=16, config=PruneConfig(device="cpu",
                       method="wanda", sparsity=0.5), evaluation=EvalSpec(windows=1)), events.append,
                           store=RunStore(tmp_path / "runs.sqlite"))
    notes = [e.message for e in events if getattr(e, "stage", "") == "load"]
    assert any("do not fit in the 0.0 GiB of free memory: streaming its blocks from disk" in n for n in notes), notes
    assert record["job"]["stream"] is True and "streamed" in record["notes"][-1]
