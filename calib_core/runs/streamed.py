"""A streamed run's plumbing: the model opened with its blocks left on disk, where the pruned blocks
and their masks are written as each one finishes, and the folder's card and report at the end."""

from __future__ import annotations

import contextlib
from pathlib import Path

from transformers import AutoTokenizer

from .. import assets
from ..errors import ConfigError, ModelLoadError
from ..files import atomic_folder, npz_archive, scratch_folder
from ..metrics.agreement import block_masks
from ..models import DTYPES, LoadedModel, family_of
from ..paths import streamed_scratch_dir
from ..prune.streaming import STREAMABLE_LAYERS, StreamedModel
from .card import calibration_excerpts, model_card
from .events import PipelineEvent
from .saved import ShardWriter, complete_folder, license_files
from .spec import RunSpec


def model_folder(spec: str, emit) -> Path | None:
    """The folder a bundled alias (converted on first use, saying so) or a local folder spec names; None
    for a hub id."""
    if spec in assets.BUNDLED:
        return assets.bundled_model_dir(spec, lambda message: emit(PipelineEvent("load", message)))
    folder = Path(spec).expanduser()
    return folder if folder.is_dir() else None


def open_streamed(spec: RunSpec, emit) -> tuple[LoadedModel, StreamedModel]:
    """The run's model with its blocks left on disk, and a LoadedModel view of it (tokenizer, notes)."""
    if spec.evaluation.cloze_items or spec.evaluation.lm_eval_tasks is not None:
        raise ConfigError("A streamed run measures perplexity only (block by block): drop --cloze/--lm-eval, or "
                          "evaluate the saved folder afterwards.")
    folder = model_folder(spec.model, emit)
    if folder is None:
        raise ModelLoadError(f"Streaming reads the model's files from disk: download '{spec.model}' first (`hf "
                             f"download {spec.model} --local-dir DIR`) and pass the folder.")
    streamed = StreamedModel(folder, DTYPES[spec.dtype], spec.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
    notes = [assets.BUNDLED[spec.model].caveat] if spec.model in assets.BUNDLED else []
    notes.append("streamed: each decoder block was read from disk for its turn and written out after it")
    return LoadedModel(streamed.model, tokenizer, spec.model, str(folder), family_of(streamed.model), notes), streamed


def streamed_output(spec: RunSpec):
    """Where a streamed run writes the pruned model: the save folder (appearing whole or not at all), or
    a folder in the cache removed when the run ends. Nothing for a run in memory."""
    if not spec.stream:
        return contextlib.nullcontext()
    if spec.save:
        return atomic_folder(spec.save, spec.overwrite)
    return scratch_folder(streamed_scratch_dir(), "streamed-model")


def streamed_masks(spec: RunSpec, path: Path):
    """Where a streamed run writes its masks block by block (the whole model's never in memory at once):
    `add(arrays)` into the run's mask file, which appears when the run ends; None otherwise."""
    return npz_archive(path) if spec.stream and spec.keep_masks else contextlib.nullcontext()


class BlockSink:
    """Receives each pruned block of a streamed run: writes its shard and its masks."""

    def __init__(self, folder, streamed: StreamedModel, add_masks=None):
        outside = [n for n in streamed.files if not n.startswith(STREAMABLE_LAYERS + ".")]
        self.writer = ShardWriter(folder, len(streamed.blocks) + len(outside))
        self.streamed, self.add_masks = streamed, add_masks

    def __call__(self, index: int, tensors: dict) -> None:
        self.writer.add(tensors)
        if self.add_masks is not None:
            self.add_masks(block_masks(index, self.streamed.blocks[index]))

    def finish(self, tokenizer) -> None:
        for name, tensor in self.streamed.other_tensors():
            self.writer.add({name: tensor})
            del tensor  # not alive while the next one (an embedding-sized matrix) is read
        self.writer.finish(self.streamed.model, tokenizer)

    def describe(self, spec: RunSpec, record: dict, calibration, tokenizer) -> dict:
        """The model card and report in the streamed folder; what the record keeps about it."""
        saved = {"path": str(Path(spec.save).expanduser().absolute()), "format": "safetensors (dense, sharded per block)",
                 "weights_bytes": self.writer.total_bytes, "bitmask_estimate_bytes": None,
                 "reload_check": {"checked": False, "reason": "a streamed run never holds the whole model to compare "
                                                              "with; its perplexity was measured from the saved files"}}
        complete_folder(self.writer.folder, saved, record,
                        model_card(record, spec, calibration_excerpts(calibration, tokenizer)), license_files(spec))
        return saved
