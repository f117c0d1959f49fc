"""Models larger than memory: the model is built without weights, the embeddings, norms and head are
read from its safetensors files at once, and each decoder block's tensors are read only when its turn
comes (`safetensors.safe_open`, no full state dict) and released to the meta device after it. The
engine and the streamed perplexity drive it block by block."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from ..models import FAMILIES, decoder_blocks

STREAMABLE_LAYERS = "model.layers"  # the families whose blocks, norm and head sit where we read them


def weight_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (sharded or single-file checkpoints)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {name: folder / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise ModelLoadError(f"'{folder}' has no safetensors weights: streaming reads .safetensors files only.")
    from safetensors import safe_open

    with safe_open(single, framework="pt") as handle:
        return {name: single for name in handle.keys()}


class StreamedModel:
    """A causal LM whose decoder blocks stay on disk until `load_block`. Weights are cast to `dtype`."""

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.folder, self.dtype = Path(folder), dtype
        config = AutoConfig.from_pretrained(self.folder, trust_remote_code=trust_remote_code)
        family = FAMILIES.get(config.model_type)
        if family is None or family.blocks_path != STREAMABLE_LAYERS:
            raise UnsupportedModelError(
                f"Streaming supports the families whose blocks are `{STREAMABLE_LAYERS}` (Llama, Mistral, Qwen, "
                f"Gemma, Phi-3); '{config.model_type}' is not one of them: run it in memory.")
        with init_empty_weights():  # parameters on the meta device; buffers (rotary tables) real
            self.model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model.eval()
        self.files = weight_files(self.folder)
        self.blocks = decoder_blocks(self.model)
        missing = [n for n in self._block_names(0) if n not in self.files]
        if missing:
            raise UnsupportedModelError(f"'{folder}' names its tensors differently from the model's parameters (no "
                                        f"{missing[0]}): streaming needs a checkpoint saved by transformers.")
        rest = [n for n, _ in self.model.named_parameters() if not n.startswith(STREAMABLE_LAYERS + ".")]
        self._read(self.model, {n: n for n in rest if n in self.files}, torch.device("cpu"))
        if any(n not in self.files for n in rest):  # a tied head shares the embedding
            self.model.tie_weights()
        still_meta = [n for n, p in self.model.named_parameters()
                      if p.is_meta and not n.startswith(STREAMABLE_LAYERS + ".")]
        if still_meta:
            raise ModelLoadError(f"'{folder}' lacks {still_meta[0]}.")

    def _block_names(self, index: int) -> list[str]:
        return [f"{STREAMABLE_LAYERS}.{index}.{name}" for name, _ in self.blocks[index].named_parameters()]

    def _read(self, module: nn.Module, names: dict[str, str], device: torch.device) -> None:
        """Set `module`'s parameters (local name -> checkpoint name) from the files, one file open at a time."""
        from accelerate.utils import set_module_tensor_to_device
        from safetensors import safe_open

        by_file = defaultdict(list)
        for local, stored in names.items():
            by_file[self.files[stored]].append((local, stored))
        for path, pairs in by_file.items():
            with safe_open(path, framework="pt") as handle:
                for local, stored in pairs:
                    set_module_tensor_to_device(module, local, device, value=handle.get_tensor(stored),
                                                dtype=self.dtype)

    def load_block(self, index: int, device: torch.device) -> None:
        block = self.blocks[index]
        self._read(block, {name: f"{STREAMABLE_LAYERS}.{index}.{name}" for name, _ in block.named_parameters()},
                   device)

    def block_tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The loaded block's parameters under their checkpoint names, on the CPU."""
        return {f"{STREAMABLE_LAYERS}.{index}.{name}": p.detach().to("cpu").contiguous()
                for name, p in self.blocks[index].named_parameters()}

    def release_block(self, index: int) -> None:
        """Back to the meta device: the block's memory is free (its buffers stay)."""
        from accelerate.utils import set_module_tensor_to_device

        for name, _ in list(self.blocks[index].named_parameters()):
            set_module_tensor_to_device(self.blocks[index], name, "meta")

    def other_tensors(self) -> dict[str, torch.Tensor]:
        """Everything outside the blocks (embeddings, final norm, an untied head), under checkpoint names
        (named_parameters lists a tied head once, under the embedding's name, as save_pretrained does)."""
        return {n: p.detach().contiguous() for n, p in self.model.named_parameters()
                if not n.startswith(STREAMABLE_LAYERS + ".")}

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head over the last block's outputs: final norm, output embedding, the family's soft cap
        (computed where the head's weights are, in memory)."""
        head = self.model.get_output_embeddings()
        hidden = hidden.to(head.weight.device)
        logits = head(self.model.model.norm(hidden))
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
