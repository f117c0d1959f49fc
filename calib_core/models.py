"""Load causal LMs and find what the engine prunes.

Architecture differences live here and only here: a family is one table entry naming where its
decoder blocks are. Inside a block every nn.Linear / Conv1D is prunable; embeddings and lm_head sit
outside the blocks and are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import assets, hub
from .devices import resolve_device
from .errors import ModelLoadError, UnsupportedModelError
from .half_matmul import multiply_half_in_float32

try:  # GPT-2 style layers store weights transposed ([in, out]).
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers always ships it today
    Conv1D = ()


@dataclass(frozen=True)
class Family:
    blocks_path: str  # dotted attribute path from the CausalLM to its ModuleList of decoder blocks
    label: str
    final_norm_path: str = "model.norm"  # the norm between the last block and the output embedding


FAMILIES: dict[str, Family] = {
    "llama": Family("model.layers", "Llama"),
    "mistral": Family("model.layers", "Mistral"),
    "qwen2": Family("model.layers", "Qwen2"),
    "qwen3": Family("model.layers", "Qwen3"),
    "gemma": Family("model.layers", "Gemma"),
    "gemma2": Family("model.layers", "Gemma2"),
    "gemma3_text": Family("model.layers", "Gemma3"),
    "phi3": Family("model.layers", "Phi-3"),
    "opt": Family("model.decoder.layers", "OPT", "model.decoder.final_layer_norm"),
    "gpt2": Family("transformer.h", "GPT-2", "transformer.ln_f"),
    "gpt_neox": Family("gpt_neox.layers", "GPT-NeoX", "gpt_neox.final_layer_norm"),
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
AUTO_DTYPE = "auto"  # the device's native dtype (devices.native_dtype): the app's and the CLI's default
DTYPE_CHOICES = (AUTO_DTYPE, *DTYPES)


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """The dtype a run computes in: `auto` resolved for `device` (bfloat16 on CPUs with native bf16
    arithmetic, float16 on CUDA, float32 otherwise), any other name checked. Records state the result."""
    if dtype == AUTO_DTYPE:
        from .devices import native_dtype

        return native_dtype(device)
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype '{dtype}'. Choose one of {', '.join(DTYPE_CHOICES)}.")
    return dtype


def family_of(model: nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedModelError(
            f"Model type '{model_type}' ({type(model).__name__}) is not supported: expected a "
            f"decoder-only causal LM of one of these families: "
            f"{', '.join(sorted({f.label for f in FAMILIES.values()}))} "
            f"(config.model_type in {sorted(FAMILIES)})."
        )
    return family


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    family = family_of(model)
    obj = model
    for part in family.blocks_path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no '{family.blocks_path}': load it as a causal LM "
                f"(AutoModelForCausalLM), not a base or multimodal model."
            )
    return obj


def final_norm(model: nn.Module) -> nn.Module:
    """What turns the last block's output into the output embedding's input: the family's final norm
    (and OPT's down-projection where a model has one)."""
    module = model
    for part in family_of(model).final_norm_path.split("."):
        module = getattr(module, part)
    project_out = getattr(getattr(getattr(model, "model", None), "decoder", None), "project_out", None)
    return nn.Sequential(module, project_out) if project_out is not None else module


def prunable_modules(block: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv1D layers of one block, in forward-registration order."""
    return {
        name: module
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear) or (Conv1D and isinstance(module, Conv1D))
    }


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (a transposed view for Conv1D)."""
    return module.weight.data.t() if Conv1D and isinstance(module, Conv1D) else module.weight.data


def set_weight_matrix(module: nn.Module, matrix: torch.Tensor) -> None:
    target = weight_matrix(module)
    target.copy_(matrix.to(target.dtype))


# ---------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    spec: str
    source: str  # resolved path or hub id
    family: Family
    notes: list[str] = field(default_factory=list)


def place_for_inference(model: nn.Module, device: str = "auto") -> torch.device:
    """Move a model to the compute device for generation or scoring, after checking that the whole
    model (and a tenth more for activations and the cache) fits in the device's free memory; a model
    that does not is refused with what to do instead. Quantized models stay where bitsandbytes put
    them (they cannot be moved after loading)."""
    from .devices import describe_free, fits_whole, model_bytes
    from .errors import InsufficientMemoryError

    target = resolve_device(device)
    if is_quantized(model):
        return next(model.parameters()).device
    if not fits_whole(model, target, model_bytes(model) // 10):
        raise InsufficientMemoryError(
            f"Generation and scoring need the whole model on one device: it takes "
            f"{model_bytes(model) / 2**30:.2f} GiB, and there is {describe_free(target)}. Use the CPU (--device cpu), "
            f"a smaller dtype, or an 8-/4-bit load.")
    model.to(target)
    return target


def _offline_message(spec: str) -> str:
    return (
        f"Model '{spec}' is not in the local Hugging Face cache and the hub cannot be reached. "
        f"Download it on a connected machine, or pass a local folder (--model /path/to/model) or "
        f"the bundled default (--model {assets.DEFAULT_MODEL})."
    )


def load_model(
    spec: str = assets.DEFAULT_MODEL,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: str | None = None,
    on_message: Callable[[str], None] | None = None,
    device: str = "auto",
) -> LoadedModel:
    """Load a causal LM by bundled alias, local folder or hub id (weights stay on CPU).

    `quantization` ('8bit' / '4bit') loads through bitsandbytes, for generation and scoring only, onto
    `device` (bitsandbytes places the weights while loading; they cannot be moved afterwards).
    Remote model code runs only when `trust_remote_code` is explicitly True. `on_message` hears about
    slow first steps (a bundled model's one-time conversion).
    """
    dtype = resolve_dtype(dtype, device)
    notes = []
    if spec in assets.BUNDLED:
        source, local = str(assets.bundled_model_dir(spec, on_message)), True
        notes.append(assets.BUNDLED[spec].caveat)
    elif Path(spec).expanduser().is_dir():
        source, local = str(Path(spec).expanduser()), True
        if not (Path(source) / "config.json").exists():
            raise ModelLoadError(f"Folder '{spec}' has no config.json: not a Hugging Face model folder.")
    elif Path(spec).expanduser().exists():
        raise ModelLoadError(f"'{spec}' is a file; give the model's folder (with config.json) instead.")
    elif spec.count("/") > 1 or spec.startswith((".", "~")):
        raise ModelLoadError(f"Model folder '{spec}' does not exist.")
    else:
        source, local = spec, False
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if quantization:
        kwargs["quantization_config"] = _bnb_config(quantization)
        kwargs["device_map"] = {"": str(resolve_device(device))}  # without it, always the first GPU
    try:
        model, tokenizer = _from_pretrained(source, local, kwargs)
    except (UnsupportedModelError, ModelLoadError):
        raise
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"'{spec}' needs custom code from its repository. It runs only if you opt in "
                f"(--trust-remote-code); read that code first."
            ) from exc
        if "Unrecognized" in str(exc):
            raise UnsupportedModelError(
                f"'{spec}' is not a causal language model transformers can load: {str(exc).splitlines()[0]}"
            ) from exc
        raise ModelLoadError(f"Could not load '{spec}': {exc}") from exc
    model.eval()
    if not quantization:
        multiply_half_in_float32(model, DTYPES[dtype])
    decoder_blocks(model)  # fail now, not mid-run, if the blocks are not where we expect
    return LoadedModel(model, tokenizer, spec, source, family_of(model), notes)


def _from_pretrained(source: str, local: bool, kwargs: dict):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    remote = {"trust_remote_code": kwargs["trust_remote_code"]}
    extra = {}
    if not local:
        try:  # a cached hub model must load without any network round-trip
            AutoConfig.from_pretrained(source, local_files_only=True, **remote)
            extra = {"local_files_only": True}
        except OSError:
            if not hub.hub_reachable():
                raise ModelLoadError(_offline_message(source)) from None
    try:
        # The config first: an unsupported architecture is refused before any weights load.
        config = AutoConfig.from_pretrained(source, **remote, **extra)
        if config.model_type not in FAMILIES:
            raise UnsupportedModelError(
                f"'{source}' is a '{config.model_type}' model, not a decoder-only causal LM of a "
                f"supported family ({', '.join(sorted({f.label for f in FAMILIES.values()}))})."
            )
        model = AutoModelForCausalLM.from_pretrained(source, config=config, **kwargs, **extra)
        tokenizer = AutoTokenizer.from_pretrained(source, **remote, **extra)
    except OSError as exc:
        if not local and not hub.hub_reachable():
            raise ModelLoadError(_offline_message(source)) from exc
        raise ModelLoadError(
            f"Could not load '{source}': {str(exc).splitlines()[0]} "
            f"{'Check the folder holds the weights and tokenizer files.' if local else 'Check the hub id (e.g. HuggingFaceTB/SmolLM2-135M), or use a local folder.'}"
        ) from exc
    return model, tokenizer


def _bnb_config(quantization: str):
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    raise ModelLoadError(f"Unknown quantization '{quantization}': use '8bit' or '4bit'.")


def is_quantized(model: nn.Module) -> bool:
    return getattr(model, "is_quantized", False) or getattr(
        getattr(model, "config", None), "quantization_config", None
    ) is not None


def describe_model(model: nn.Module) -> dict:
    """A short summary for the UI and reports."""
    blocks = decoder_blocks(model)
    per_block = prunable_modules(blocks[0])
    prunable = sum(
        m.weight.numel() for b in blocks for m in prunable_modules(b).values()
    )
    return {
        "family": family_of(model).label,
        "model_type": model.config.model_type,
        "class": type(model).__name__,
        "blocks": len(blocks),
        "parameters": sum(p.numel() for p in model.parameters()),
        "prunable_parameters": prunable,
        "prunable_modules_per_block": list(per_block),
        "hidden_size": hidden_size(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "quantized": bool(is_quantized(model)),
        # bitsandbytes 8-/4-bit loads shrink this; compare it with the fp32/bf16 load of the same model
        "memory_footprint_bytes": int(model.get_memory_footprint()) if hasattr(model, "get_memory_footprint") else None,
    }


def hidden_size(model: nn.Module) -> int:
    config = model.config
    for attr in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    raise UnsupportedModelError(f"Cannot find the hidden size in {type(config).__name__}.")
