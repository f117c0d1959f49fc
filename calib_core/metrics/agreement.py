"""Mask agreement between two pruning runs of the same model: how differently did two calibration
sets (or methods) prune it?

A run's masks are stored bit-packed (kept = weight != 0), one array per prunable module, in an .npz
file beside the run store: about 13 MB for SmolLM2-135M. Agreement per module and per block is the
Jaccard index of the kept weights, |A and B| / |A or B|.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from ..errors import ConfigError, NotEnoughDataError
from ..files import npz_archive
from ..models import decoder_blocks, prunable_modules, weight_matrix

if TYPE_CHECKING:  # pandas only where a table is made: a run writing masks need not hold it in memory
    import pandas as pd


def save_masks(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the kept-weight masks of every prunable module (atomically) and return the path."""
    with npz_archive(path) as add:
        for b, block in enumerate(decoder_blocks(model)):
            add(block_masks(b, block))
    return Path(path)


def block_masks(index: int, block: nn.Module) -> dict[str, np.ndarray]:
    """One block's kept-weight masks, packed (a streamed run writes them block by block)."""
    arrays = {}
    for name, module in prunable_modules(block).items():
        kept = (weight_matrix(module) != 0).cpu().numpy()
        arrays[f"{index}/{name}"] = np.packbits(kept, axis=None)
        arrays[f"{index}/{name}#shape"] = np.asarray(kept.shape)
    return arrays


def stored_kept(masks, key: str) -> np.ndarray:
    """One module's kept-weight mask [out, in] (True: kept) from an opened mask archive (np.load)."""
    shape = tuple(masks[key + "#shape"])
    return np.unpackbits(masks[key], count=int(np.prod(shape))).astype(bool).reshape(shape)


def _load(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
    if not Path(path).is_file():
        raise NotEnoughDataError(f"No stored masks at {path}.")
    with np.load(path) as data:
        return {key: (data[key], tuple(data[key + "#shape"])) for key in data.files if not key.endswith("#shape")}


def mask_agreement(path_a: str | os.PathLike, path_b: str | os.PathLike) -> pd.DataFrame:
    """Per-module Jaccard of kept weights: columns block, module, jaccard, kept_a, kept_b, weights."""
    a, b = _load(path_a), _load(path_b)
    if a.keys() != b.keys() or any(a[k][1] != b[k][1] for k in a):
        raise ConfigError("The two runs' masks do not have the same modules and shapes: compare runs of one model.")
    rows = []
    for key, (bits_a, shape) in a.items():
        count = int(np.prod(shape))
        kept_a = np.unpackbits(bits_a, count=count).astype(bool)
        kept_b = np.unpackbits(b[key][0], count=count).astype(bool)
        union = int(np.count_nonzero(kept_a | kept_b))
        both = int(np.count_nonzero(kept_a & kept_b))
        block, module = key.split("/", 1)
        rows.append({"block": int(block), "module": module, "jaccard": both / union if union else 1.0,
                     "kept_both": both, "kept_either": union, "kept_a": int(kept_a.sum()),
                     "kept_b": int(kept_b.sum()), "weights": count})
    import pandas as pd

    return pd.DataFrame(rows)


def block_agreement(per_module: pd.DataFrame) -> pd.DataFrame:
    """Jaccard per block, pooled over the block's modules (weighted by their sizes)."""
    import pandas as pd

    sums = per_module.groupby("block")[["kept_both", "kept_either"]].sum()
    return pd.DataFrame({"block": sums.index, "jaccard": (sums.kept_both / sums.kept_either).values})


def overall_jaccard(per_module: pd.DataFrame) -> float:
    """Jaccard of the kept weights of the whole model, pooled over every module."""
    return float(per_module.kept_both.sum() / per_module.kept_either.sum())
