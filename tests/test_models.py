"""Model specs, families, refusals and memory estimates (no downloads)."""

import json
import time

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from calib_core import hub, models
from calib_core.errors import ModelLoadError, UnsupportedModelError
from calib_core.models import decoder_blocks, describe_model, family_of, load_model, prunable_modules
from calib_core.prune.memory import estimate_memory
from calib_core.prune.methods import METHODS
from tests.tiny import FAMILY_CONFIGS, char_tokenizer, tiny_model


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_families_expose_blocks_and_only_block_linears(family):
    model = tiny_model(family)
    blocks = decoder_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    names = list(prunable_modules(blocks[0]))
    assert 4 <= len(names) <= 7
    assert not any("embed" in n or "lm_head" in n or "wte" in n for n in names)
    info = describe_model(model)
    assert info["family"] == family_of(model).label and info["blocks"] == len(blocks)


def test_gpt2_conv1d_is_seen_as_out_by_in():
    model = tiny_model("gpt2")
    module = prunable_modules(decoder_blocks(model)[0])["mlp.c_fc"]
    assert tuple(module.weight.shape) == (64, 256)  # Conv1D stores [in, out]
    assert tuple(models.weight_matrix(module).shape) == (256, 64)


def test_encoder_only_model_is_refused_with_expectation():
    bert = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UnsupportedModelError, match="decoder-only causal LM.*Llama"):
        decoder_blocks(bert)


def test_local_folder_round_trip_and_unsupported_folder(tmp_path):
    tiny = tiny_model("llama")
    tiny.save_pretrained(tmp_path / "tiny")
    char_tokenizer().save_pretrained(tmp_path / "tiny")
    loaded = load_model(str(tmp_path / "tiny"))
    assert isinstance(loaded.model, type(tiny)) and loaded.family.label == "Llama" and loaded.source == str(tmp_path / "tiny")
    BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedModelError, match="not a decoder-only causal LM"):
        load_model(str(tmp_path / "bert"))


def test_missing_folder_and_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "a" / "b" / "c"))


def test_remote_code_needs_explicit_opt_in(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "my_custom_lm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                                                   "AutoModelForCausalLM": "modeling_custom.CustomLM"}}))
    (folder / "configuration_custom.py").write_text("raise RuntimeError('remote code executed')\n")
    with pytest.raises(ModelLoadError, match="opt in"):
        load_model(str(folder))


def test_offline_hub_id_fails_fast_with_guidance(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache.*smollm2-135m"):
        load_model("someone/not-a-cached-model")
    assert time.perf_counter() - start < 20


def test_bad_dtype_is_refused():
    with pytest.raises(ModelLoadError, match="Unknown dtype"):
        load_model("smollm2-135m", dtype="int3")


def test_memory_estimate_grows_with_samples_and_sparsegpt():
    model = tiny_model("llama")
    cpu = torch.device("cpu")
    small = estimate_memory(model, 8, 128, METHODS["wanda"].needs, cpu)
    big = estimate_memory(model, 64, 128, METHODS["wanda"].needs, cpu)
    hessians = estimate_memory(model, 8, 128, METHODS["sparsegpt"].needs, cpu)
    assert big.calibration_buffers == 8 * small.calibration_buffers
    assert hessians.method_statistics > small.method_statistics
    assert small.calibration_buffers == 2 * 8 * 128 * 64 * 4
    assert "GiB" in small.describe()
