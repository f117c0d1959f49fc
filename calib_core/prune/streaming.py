"""Models larger than memory: the model is built without weights; the norms are read at once, the input
embedding only while block-0 inputs are captured, the head only for logits, and each decoder block's
tensors only when its turn comes (`safetensors.safe_open` with pread, no full state dict), released to
the meta device after it. The engine and the streamed perplexity drive it block by block."""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from ..half_matmul import multiply_half_in_float32
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
    with _open(single) as handle:
        return {name: single for name in handle.keys()}


def _return_freed_memory() -> None:
    """Give freed heap memory back to the system: glibc keeps it, and the next block's tensors or a
    module's temporaries, of other sizes, would not reuse all of it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
HEAP_LIMIT_BYTES = 16 << 20


def _map_matrices_on_their_own() -> None:
    """Allocations of HEAP_LIMIT_BYTES or more get a memory mapping of their own, returned to the system
    when freed. glibc otherwise serves them from the heap once it has freed one that large (its
    threshold rises up to 32 MiB), and the holes they leave there stay resident: 35 MB at a SparseGPT
    peak on a 1.5B model. Smaller allocations (activations) stay on the heap, which is faster: a 1 MiB
    limit made a streamed prune of the bundled model 1.7x slower."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, HEAP_LIMIT_BYTES)
    except (OSError, AttributeError):  # not glibc
        pass


def _open(path: Path):
    """A safetensors file read with pread(2): a tensor is copied into memory of its own, never a view of
    a mapping of the file (pages of a mapping stay resident, and writing into them copies them)."""
    from safetensors import safe_open

    return safe_open(path, framework="pt", backend="pread")


class StreamedModel:
    """A causal LM whose decoder blocks stay on disk until `load_block`. Weights are cast to `dtype`."""

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.folder, self.dtype = Path(folder), dtype
        _map_matrices_on_their_own()
        config = AutoConfig.from_pretrained(self.folder, trust_remote_code=trust_remote_code)
        family = FAMILIES.get(config.model_type)
        if family is None or family.blocks_path != STREAMABLE_LAYERS:
            raise UnsupportedModelError(
                f"Streaming supports the families whose blocks are `{STREAMABLE_LAYERS}` (Llama, Mistral, Qwen, "
                f"Gemma, Phi-3); '{config.model_type}' is not one of them: run it in memory.")
        with init_empty_weights():  # parameters on the meta device; buffers (rotary tables) real
            self.model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model.eval()
        multiply_half_in_float32(self.model, dtype)
        self.files = weight_files(self.folder)
        self.blocks = decoder_blocks(self.model)
        missing = [n for n in self._block_names(0) if n not in self.files]
        if missing:
            raise UnsupportedModelError(f"'{folder}' names its tensors differently from the model's parameters (no "
                                        f"{missing[0]}): streaming needs a checkpoint saved by transformers.")
        self.embedding = _param_name(self.model, self.model.get_input_embeddings())
        head = _param_name(self.model, self.model.get_output_embeddings())
        self.head = head if head in self.files else None  # None: tied to the embedding (saved once)
        outside = [n for n, _ in self.model.named_parameters() if not n.startswith(STREAMABLE_LAYERS + ".")]
        absent = [n for n in outside if n not in self.files and n != head]
        if absent:
            raise ModelLoadError(f"'{folder}' lacks {absent[0]}.")
        # Norms now (small); the embedding only around the embedding stage, the head only for logits.
        self._read(self.model, {n: n for n in outside if n not in (self.embedding, head)}, torch.device("cpu"))
        self._head_loaded: torch.device | None = None  # where the head's weights are, once read

    def read_from(self, folder: str | Path) -> None:
        """Take the blocks (and the rest) from another folder of the same model from now on: the pruned
        model a streamed run has just written."""
        self.folder, self.files = Path(folder), weight_files(Path(folder))

    @contextlib.contextmanager
    def embeddings(self):
        """The input embedding in memory while the block-0 inputs are captured, then released."""
        self._read(self.model, {self.embedding: self.embedding}, torch.device("cpu"))
        try:
            yield
        finally:
            if self._head_loaded is None or self.head is not None:  # a tied head still needs it
                self._to_meta(self.model, [self.embedding])

    def release_head(self) -> None:
        from ..models import final_norm

        self._to_meta(self.model, [self.head or self.embedding])
        final_norm(self.model).to("cpu")
        self._head_loaded = None

    def _block_names(self, index: int) -> list[str]:
        return [f"{STREAMABLE_LAYERS}.{index}.{name}" for name, _ in self.blocks[index].named_parameters()]

    def _read(self, module: nn.Module, names: dict[str, str], device: torch.device) -> None:
        """Set `module`'s parameters (local name -> checkpoint name) from the files, one file open at a time."""
        from accelerate.utils import set_module_tensor_to_device

        by_file = defaultdict(list)
        for local, stored in names.items():
            by_file[self.files[stored]].append((local, stored))
        for path, pairs in by_file.items():
            with _open(path) as handle:
                for local, stored in pairs:
                    # clear_cache=False: accelerate would otherwise empty the CUDA cache after every tensor
                    set_module_tensor_to_device(module, local, device, value=handle.get_tensor(stored),
                                                dtype=self.dtype, clear_cache=False)

    def load_block(self, index: int, device: torch.device) -> None:
        block = self.blocks[index]
        self._read(block, {name: f"{STREAMABLE_LAYERS}.{index}.{name}" for name, _ in block.named_parameters()},
                   device)

    def block_tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The loaded block's parameters under their checkpoint names, on the CPU."""
        return {f"{STREAMABLE_LAYERS}.{index}.{name}": p.detach().to("cpu").contiguous()
                for name, p in self.blocks[index].named_parameters()}

    def return_freed_memory(self) -> None:
        _return_freed_memory()

    def release_block(self, index: int) -> None:
        """Back to the meta device: the block's memory is free (its buffers stay)."""
        self._to_meta(self.blocks[index], [name for name, _ in self.blocks[index].named_parameters()])

    def _to_meta(self, module: nn.Module, names: list[str]) -> None:
        from accelerate.utils import set_module_tensor_to_device

        for name in names:
            set_module_tensor_to_device(module, name, "meta", clear_cache=False)
        if module is self.model and self.head is None:
            self.model.tie_weights()  # the head follows the embedding
        _return_freed_memory()

    def other_tensors(self):
        """Everything outside the blocks (embeddings, final norm, an untied head) under checkpoint names,
        read from the files one at a time (save_pretrained stores a tied head once, as the embedding)."""
        for name, path in self.files.items():
            if not name.startswith(STREAMABLE_LAYERS + "."):
                with _open(path) as handle:
                    yield name, handle.get_tensor(name).to(self.dtype)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head over the last block's outputs: final norm, output embedding, the family's soft cap,
        computed where `hidden` is (the compute device: a 128k-vocabulary head on the CPU would take
        minutes per window), its weights read there at the first call."""
        from ..models import final_norm

        device = hidden.device
        if self._head_loaded != device:
            self._read(self.model, {self.head or self.embedding: self.head or self.embedding}, device)
            if self.head is None:
                self.model.tie_weights()
            final_norm(self.model).to(device)
            self._head_loaded = device
        logits = self.model.get_output_embeddings()(final_norm(self.model)(hidden))
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


def _param_name(model: nn.Module, module: nn.Module) -> str:
    return next(f"{name}.weight" for name, m in model.named_modules() if m is module)
