"""The GPU paths' logic, tested without a GPU: device names checked before any work, one queue key per
physical device, free memory counted as CUDA's allocator sees it, evaluation that falls back to
block by block when the whole model does not fit, and quantized loads on the chosen device
(`fake_cuda` stands in for a one-GPU machine where only names and choices matter)."""

import subprocess
import sys

import pytest
import torch

from calib_core.devices import device_key, free_bytes, native_dtype, resolve_device
from calib_core.errors import DeviceError, InsufficientMemoryError
from calib_core.prune import PruneConfig
from tests.tiny import char_tokenizer, random_ids, tiny_model


def test_every_name_of_one_gpu_is_one_device(fake_cuda):
    assert {device_key(name) for name in ("auto", "cuda", "cuda:0", " cuda:0 ")} == {"cuda:0"}
    assert device_key("cpu") == "cpu"


@pytest.mark.parametrize("name, message", [
    ("cuda:1", "does not exist: this machine has 1 CUDA device"),
    ("gpu", "Unknown device 'gpu': use auto"),
    ("CUDA", "device names are lower case"),
    ("cuda:x", "Unknown device"),
])
def test_a_device_this_machine_lacks_is_refused_with_what_it_has(fake_cuda, name, message):
    with pytest.raises(DeviceError, match=message) as refused:
        resolve_device(name)
    assert "cpu, cuda:0" in str(refused.value) or "lower case" in str(refused.value) or "1 CUDA" in str(refused.value)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (False, False, "float32"), (False, True, "bfloat16"), (True, False, "bfloat16")])
def test_the_native_dtype_follows_the_cpus_bf16_arithmetic(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert native_dtype() == expected == native_dtype("cpu")


def test_the_native_dtype_on_cuda_is_float16_as_the_authors_run(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert native_dtype() == "float16" and native_dtype("cpu") == "bfloat16"


def test_cuda_on_a_machine_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


def test_the_cli_refuses_a_bad_device_before_loading_anything(tmp_path):
    done = subprocess.run([sys.executable, "-m", "calib_core", "eval", "--model", str(tmp_path / "nothing-here"),
                           "--device", "gpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Unknown device 'gpu'" in done.stderr, done.stderr
    assert "does not exist" not in done.stderr  # the model folder was never looked at


def test_free_cuda_memory_counts_our_own_unused_cache(fake_cuda, monkeypatch):
    """mem_get_info counts what our caching allocator holds as used; 5 of its 8 reserved GiB are free."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 8 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 3 * gib)
    assert free_bytes(torch.device("cuda", 0)) == 15 * gib


def test_the_batch_size_follows_the_device(fake_cuda):
    assert PruneConfig(device="cpu").resolved().batch_size == 1
    assert PruneConfig(device="auto").resolved().batch_size == 8  # auto is the GPU here
    assert PruneConfig(device="cuda", batch_size=2).resolved().batch_size == 2


def test_a_sweep_runs_on_its_device_and_its_keys_do_not_depend_on_it():
    from calib_core.errors import ConfigError
    from calib_core.experiments.sweeps import SweepGrid

    grid = dict(name="g", methods=["wanda"], sparsities=[0.5])
    on_cpu, on_auto = SweepGrid.from_dict({**grid, "device": "cpu"}), SweepGrid.from_dict(grid)
    point = on_cpu.points()[0]
    assert on_cpu.spec(point).config.device == "cpu"
    assert [p.key for p in on_cpu.points()] == [p.key for p in on_auto.points()]
    with pytest.raises(ConfigError, match="cuda:3"):
        SweepGrid.from_dict({**grid, "device": "cuda:3"})


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "opt"])
def test_perplexity_block_by_block_equals_the_whole_model_when_it_does_not_fit(family, monkeypatch):
    from calib_core.metrics.perplexity import perplexity

    model, tokenizer = tiny_model(family, seed=2), char_tokenizer()
    stream = random_ids(1, 4 * 40, seed=5).flatten()
    whole = perplexity(model, tokenizer, "builtin:wiki", seqlen=40, device="cpu", stream=stream)
    monkeypatch.setattr("calib_core.devices.fits_whole", lambda *args, **kwargs: False)
    blockwise = perplexity(model, tokenizer, "builtin:wiki", seqlen=40, device="cpu", stream=stream)
    assert (whole.placement, blockwise.placement) == ("whole model", "block by block")
    assert blockwise.ppl == pytest.approx(whole.ppl, rel=1e-5)
    assert all(p.device.type == "cpu" for p in model.parameters())  # every block went back


def test_evaluation_that_does_not_fit_on_the_device_says_where_it_ran(fake_cuda, monkeypatch):
    """Cloze on a job whose device cannot hold the whole model: it runs where the model is, and says so."""
    from calib_core.models import LoadedModel, family_of
    from calib_core.runs.evaluate import evaluate_model
    from calib_core.runs.spec import EvalSpec

    monkeypatch.setattr("calib_core.devices.fits_whole", lambda *args, **kwargs: False)
    monkeypatch.setattr("calib_core.devices.free_bytes", lambda device: 2**20)
    monkeypatch.setattr("calib_core.runs.evaluate.cloze_accuracy", lambda model, *a, **k: _Accuracy(
        next(model.parameters()).device))
    model = tiny_model("llama")
    events = []
    evaluate_model(LoadedModel(model, char_tokenizer(), "tiny", "tiny", family_of(model)), EvalSpec([], cloze_items=2), 32,
                   device="cuda", on_event=events.append)
    notes = [e.message for e in events if e.stage == "cloze" and e.message.startswith("note:")]
    assert notes == ["note: the whole model does not fit on cuda:0 (0.00 GiB free on cuda:0): the cloze proxy runs on cpu"]


class _Accuracy:
    def __init__(self, device):
        self.acc = self.acc_norm = 0.5
        self.items, self.device = 2, str(device)

    def as_dict(self):
        return {"device": self.device}


def test_generation_refuses_a_model_that_does_not_fit_on_its_device(monkeypatch):
    from calib_core.models import place_for_inference

    monkeypatch.setattr("calib_core.devices.fits_whole", lambda *args, **kwargs: False)
    with pytest.raises(InsufficientMemoryError, match="whole model on one device"):
        place_for_inference(tiny_model("llama"), "cpu")


def test_a_quantized_load_lands_on_the_chosen_device(fake_cuda, monkeypatch, tmp_path):
    from calib_core import models
    from tests.tiny import save_tiny_folder

    folder = save_tiny_folder(tmp_path / "tiny")
    seen = {}

    def loads(source, local, kwargs):
        seen.update(kwargs)
        raise models.ModelLoadError("stop here")

    monkeypatch.setattr(models, "_from_pretrained", loads)
    with pytest.raises(models.ModelLoadError, match="stop here"):
        models.load_model(str(folder), quantization="8bit", device="cuda")
    assert seen["device_map"] == {"": "cuda:0"}


def test_the_servers_cached_model_is_never_quantized(monkeypatch):
    """The Streamlit server's copy describes the model; a quantized one would hold GPU memory outside
    the job queue."""
    from app_ui import cache as ui_cache

    calls = []
    monkeypatch.setattr(ui_cache, "load_model", lambda spec, **kwargs: calls.append(kwargs) or object())
    monkeypatch.setattr(ui_cache, "access_policy", lambda: type("Open", (), {"model": lambda self, s, t: s})())
    ui_cache._load.clear()
    ui_cache.cached_model("some-model", "float32", "4bit", False)
    assert calls == [{"dtype": "float32", "trust_remote_code": False}]


def test_streamed_reads_never_empty_the_cuda_cache(tmp_path, monkeypatch):
    """accelerate empties the CUDA cache after every tensor it sets unless told not to: a streamed run
    on a GPU would pay that for each of thousands of tensors."""
    import accelerate.utils

    from calib_core.metrics.perplexity import streamed_perplexity
    from calib_core.prune.streaming import StreamedModel
    from tests.tiny import save_tiny_folder

    real, calls = accelerate.utils.set_module_tensor_to_device, []

    def recording(*args, **kwargs):
        calls.append(kwargs.get("clear_cache", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(accelerate.utils, "set_module_tensor_to_device", recording)
    folder = save_tiny_folder(tmp_path / "tiny")
    streamed = StreamedModel(folder)
    result = streamed_perplexity(streamed, char_tokenizer(), "builtin:wiki", seqlen=32, max_windows=2, device="cpu")
    assert result.placement == "block by block" and calls and not any(calls)
