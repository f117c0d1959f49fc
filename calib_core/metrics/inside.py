"""Inside a layer: why calibration data changed what was pruned.

From what a run keeps (its kept-weight masks and, for a calibrated run, each module's per-channel input
statistics: prune/stats.CHANNEL_KINDS) and the dense model's weights read from its files, per module:
- channels: the input-channel activation norms, outliers marked (a norm above M x the module's mean
  norm: OWL's threshold M applied to channel norms, while OWL applies it to per-weight |W| ||X|| scores), and
  for two runs the ratio of their norms per channel;
- scores: |W| against the method's score for a sample of weights, kept or pruned, and how often the run's
  mask and the magnitude mask (same pattern and sparsity) disagree;
- the mask: the kept fraction per tile of the weight matrix; for two runs where they differ, the
  module's Jaccard and how much of the disagreement falls on the top-k channels by norm;
and per block across the model: the outlier ratio, the allocated and the achieved sparsity, and for two
runs the per-block Jaccard and norm divergence. Everything is read lazily, one module at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, NotEnoughDataError
from ..prune.masks import mask_from_scores, parse_pattern
from .agreement import block_agreement, mask_agreement, stored_kept

OWL_M = 5.0  # OWL's outlier threshold for unstructured sparsity (M x the mean)
TILES = 32  # tiles per side of the mask heatmap (fewer where the matrix is smaller)


def no_channels_note(run_id) -> str:
    return (f"Run {run_id} has no per-channel statistics: it was made before the lab kept them, or by a method "
            "that reads no calibration data (magnitude). Rerun it to inspect its channels.")


@dataclass
class RunInside:
    """One finished run's stored masks and channel statistics, opened lazily (np.load of an .npz reads an
    array only when it is asked for)."""

    record: dict
    _masks: object = field(default=None, repr=False)
    _channels: object = field(default=None, repr=False)
    _weights: dict = field(default_factory=dict, repr=False)
    _agreements: dict = field(default_factory=dict, repr=False)

    @property
    def run_id(self):
        return self.record.get("run_id")

    @property
    def method(self) -> str:
        return self.record["config"]["method"]

    def label(self) -> str:
        calib = (self.record.get("calibration") or {}).get("source") or "no data"
        config = self.record["config"]
        return f"run {self.run_id}: {config['method']} {_setting(config)} on {calib}"

    @property
    def has_channels(self) -> bool:
        stats = self.record.get("channel_stats")
        return bool(stats) and Path(stats["path"]).is_file()

    def masks(self):
        if self._masks is None:
            path = self.record.get("masks")
            if not path or not Path(path).is_file():
                raise NotEnoughDataError(f"Run {self.run_id} kept no masks (a sweep point, or --no-keep-masks): "
                                         "rerun it with masks kept to inspect it.")
            self._masks = np.load(path)
        return self._masks

    def modules(self) -> list[tuple[int, str]]:
        """(block, module) of every prunable module, in the model's order."""
        return [(int(b), m) for b, m in (key.split("/", 1) for key in self.masks().files if not key.endswith("#shape"))]

    def kept(self, block: int, module: str) -> np.ndarray:
        """The kept-weight mask [out, in] (True: kept)."""
        key = f"{block}/{module}"
        masks = self.masks()
        if key not in masks.files:
            known = sorted({m for _, m in self.modules()})
            raise ConfigError(f"Run {self.run_id} has no module {module} in block {block}; modules: {', '.join(known)}.")
        return stored_kept(masks, key)

    def agreement_with(self, other: RunInside):
        """Per-module Jaccard with `other`'s masks (metrics/agreement.mask_agreement), read once per pair: the
        default module and the per-block view both need it."""
        key = other.record["masks"]
        if key not in self._agreements:
            self._agreements[key] = mask_agreement(self.record["masks"], other.record["masks"])
        return self._agreements[key]

    def channel(self, block: int, module: str, kind: str = "norm") -> np.ndarray:
        if not self.has_channels:
            raise NotEnoughDataError(no_channels_note(self.run_id))
        if self._channels is None:
            self._channels = np.load(self.record["channel_stats"]["path"])
        key = f"{block}/{module}/{kind}"
        if key not in self._channels.files:
            raise NotEnoughDataError(f"Run {self.run_id} kept no '{kind}' statistics for block {block} {module}.")
        return self._channels[key].astype(np.float64)

    def dense_weight(self, block: int, module: str) -> np.ndarray:
        """The module's dense weight [out, in], read from the model's files (not from the run, whose
        SparseGPT weights were updated)."""
        key = (block, module)
        if key not in self._weights:
            self._weights[key] = dense_weight(self.record["model"]["spec"], block, module, self.kept(block, module).shape)
        return self._weights[key]


def open_run(store, run_id: int) -> RunInside:
    row = store.get(int(run_id))
    if row.get("status") != "finished" or not row.get("record"):
        raise NotEnoughDataError(f"Run {run_id} has not finished: nothing to inspect.")
    return RunInside(row["record"])


def dense_weight(model: str, block: int, module: str, shape: tuple[int, int]) -> np.ndarray:
    """One module's dense weight from the model's safetensors files (bundled, a local folder, or a hub model
    already in the local cache), as float32 [out, in]."""
    from ..prune.streaming import _open, weight_files

    folder = _model_files(model)
    files = weight_files(folder)
    suffix = f".{block}.{module}.weight"
    names = [n for n in files if n.endswith(suffix) and ("layers" in n or ".h." in n)]
    if not names:
        raise NotEnoughDataError(f"The files of {model} have no weight for block {block} {module}.")
    with _open(files[names[0]]) as handle:
        weight = handle.get_tensor(names[0]).float().numpy()
    if weight.shape != tuple(shape) and weight.T.shape == tuple(shape):  # GPT-2's Conv1D stores [in, out]
        weight = weight.T
    return np.ascontiguousarray(weight)


def _model_files(model: str) -> Path:
    from .. import assets

    if model in assets.BUNDLED:
        return assets.bundled_model_dir(model)
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]))
    except Exception as exc:  # not in the local cache (offline, or never downloaded)
        raise NotEnoughDataError(f"The dense weights of {model} are needed to show scores and are not on this "
                                 f"machine: download it first (`hf download {model}`).") from exc


def _setting(config: dict) -> str:
    pattern = config.get("pattern") or "unstructured"
    return pattern if pattern != "unstructured" else f"{float(config.get('sparsity', 0)):.0%}"


# ------------------------------------------------------------------ 1. channels
def outlier_channels(norms: np.ndarray, m: float = OWL_M) -> np.ndarray:
    """Outlier channels: a norm above M x the mean norm of the module (OWL's threshold M on channel norms; OWL
    itself applies it to per-weight |W| ||X|| scores, prune/owl.py)."""
    return norms > m * norms.mean()


def channel_table(a: RunInside, block: int, module: str, b: RunInside | None = None, m: float = OWL_M):
    """One row per input channel, sorted by run A's norm (largest first): norm, outlier flag, rank; with
    run B its norm, outlier flag and the ratio A / B."""
    import pandas as pd

    norm_a = a.channel(block, module)
    frame = pd.DataFrame({"channel": np.arange(len(norm_a)), "norm_a": norm_a, "outlier_a": outlier_channels(norm_a, m)})
    if b is not None:
        norm_b = b.channel(block, module)
        if len(norm_b) != len(norm_a):
            raise ConfigError("The two runs' modules have different input widths: compare runs of one model.")
        frame["norm_b"] = norm_b
        frame["outlier_b"] = outlier_channels(norm_b, m)
        frame["ratio_a_to_b"] = norm_a / np.maximum(norm_b, np.finfo(np.float64).tiny)
    frame = frame.sort_values("norm_a", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(1, "rank", np.arange(1, len(frame) + 1))
    return frame


# ------------------------------------------------------------------ 2. scores
def method_score(run: RunInside, block: int, module: str, weight: np.ndarray) -> tuple[np.ndarray, str]:
    """The score the run's method ranks weights by, from the stored statistics, and its formula: the registry's
    score hook (prune/methods.score_of)."""
    from ..prune.methods import METHODS, score_of

    config = run.record["config"]
    method = config["method"]
    score = score_of(method, config.get("base")) if method in METHODS else None
    if score is None:
        raise ConfigError(f"No score view for method {method}.")
    return score(np.abs(weight), weight.astype(np.float64), lambda kind: run.channel(block, module, kind), config)


def magnitude_kept(weight: np.ndarray, kept: np.ndarray, pattern: str) -> np.ndarray:
    """The mask the magnitude method would keep for this module: the same pattern, and (unstructured) the
    same number of pruned weights as the run's mask, the smallest |W| of the matrix."""
    import torch

    parsed = parse_pattern(pattern)
    sparsity = 1.0 - kept.mean()
    pruned = mask_from_scores(torch.from_numpy(np.abs(weight)), sparsity if not parsed.is_nm else parsed.sparsity,
                              parsed, per_row=False)
    return ~pruned.numpy()


def _module_pattern(run: RunInside, block: int, module: str) -> str:
    for record in run.record.get("blocks") or []:
        if record.get("index") == block:
            for m in record.get("modules") or []:
                if m.get("name") == module:
                    return m.get("pattern") or "unstructured"
    return run.record["config"].get("pattern") or "unstructured"


@dataclass
class ScoreView:
    sample: object  # DataFrame: row, col, abs_weight, score, kept, magnitude_kept
    formula: str
    disagreement: float  # fraction of the module's weights where the run's mask and the magnitude mask differ
    weights: int


def score_view(run: RunInside, block: int, module: str, sample: int = 4000, seed: int = 0) -> ScoreView:
    import pandas as pd

    weight, kept = run.dense_weight(block, module), run.kept(block, module)
    score, formula = method_score(run, block, module, weight)
    by_magnitude = magnitude_kept(weight, kept, _module_pattern(run, block, module))
    rng = np.random.default_rng(seed)
    picked = rng.choice(weight.size, size=min(sample, weight.size), replace=False)
    rows, cols = np.unravel_index(picked, weight.shape)
    frame = pd.DataFrame({"row": rows, "col": cols, "abs_weight": np.abs(weight[rows, cols]), "score": score[rows, cols],
                          "kept": kept[rows, cols], "magnitude_kept": by_magnitude[rows, cols]})
    return ScoreView(frame, formula, float(np.mean(kept != by_magnitude)), int(weight.size))


# ------------------------------------------------------------------ 3. the mask
def tile_means(values: np.ndarray, tiles: int = TILES) -> np.ndarray:
    """The mean of `values` [out, in] over a grid of at most tiles x tiles near-equal tiles."""
    out = []
    for rows in np.array_split(np.arange(values.shape[0]), min(tiles, values.shape[0])):
        band = values[rows[0] : rows[-1] + 1]
        out.append([band[:, cols[0] : cols[-1] + 1].mean()
                    for cols in np.array_split(np.arange(values.shape[1]), min(tiles, values.shape[1]))])
    return np.asarray(out)


@dataclass
class MaskDifference:
    jaccard: float
    differ_tiles: np.ndarray  # fraction of weights that differ, per tile
    differ: int  # weights kept by exactly one run
    top_k: int
    top_k_share: float  # of the differing weights, the share in the top-k input channels by norm
    top_k_expected: float  # that share if differences fell on channels at random: top_k / in_features
    per_channel: object  # DataFrame: channel, norm_a, norm_b, differ (count per input channel)


def mask_difference(a: RunInside, b: RunInside, block: int, module: str, top_k: int | None = None,
                    tiles: int = TILES) -> MaskDifference:
    """Where two runs' masks of one module part ways. The top-k channels are ranked by the larger of the two
    runs' norms (default k: the outlier channels, norm above M x mean, of either run, at least 1)."""
    import pandas as pd

    kept_a, kept_b = a.kept(block, module), b.kept(block, module)
    if kept_a.shape != kept_b.shape:
        raise ConfigError("The two runs' masks have different shapes: compare runs of one model.")
    differ = kept_a != kept_b
    union = np.count_nonzero(kept_a | kept_b)
    jaccard = np.count_nonzero(kept_a & kept_b) / union if union else 1.0
    per_channel = differ.sum(axis=0)
    norm_a, norm_b = a.channel(block, module), b.channel(block, module)
    top = np.maximum(norm_a, norm_b)
    if top_k is None:
        top_k = max(1, int(np.count_nonzero(outlier_channels(norm_a) | outlier_channels(norm_b))))
    top_k = min(top_k, len(top))
    chosen = np.argsort(-top, kind="stable")[:top_k]
    total = int(differ.sum())
    share = float(per_channel[chosen].sum() / total) if total else 0.0
    frame = pd.DataFrame({"channel": np.arange(len(top)), "norm_a": norm_a, "norm_b": norm_b, "differ": per_channel})
    return MaskDifference(float(jaccard), tile_means(differ.astype(np.float64), tiles), total, top_k, share,
                          top_k / len(top), frame)


# ------------------------------------------------------------------ 4. across the model
def model_table(a: RunInside, b: RunInside | None = None):
    """One row per block: run A's outlier ratio (OWL runs: the percent of the block's scores above M x their
    mean), allocated and achieved sparsity; with run B its
    own, the per-block Jaccard of kept weights and the norm divergence: the mean over the block's modules
    and channels of |log2(norm_a / norm_b)| (1 = the runs' norms differ 2x on a typical channel)."""
    import pandas as pd

    frame = _blocks_frame(a, "a")
    if b is None:
        return frame
    frame = frame.merge(_blocks_frame(b, "b"), on="block", how="outer")
    agreement = block_agreement(a.agreement_with(b))
    frame = frame.merge(agreement, on="block", how="left")
    if a.has_channels and b.has_channels:
        divergence = {}
        for block, module in a.modules():
            na, nb = a.channel(block, module), b.channel(block, module)
            tiny = np.finfo(np.float64).tiny
            divergence.setdefault(block, []).append(np.abs(np.log2(np.maximum(na, tiny) / np.maximum(nb, tiny))).mean())
        frame["norm_divergence"] = frame["block"].map({k: float(np.mean(v)) for k, v in divergence.items()})
    return pd.DataFrame(frame)


def _blocks_frame(run: RunInside, suffix: str):
    import pandas as pd

    rows = [{"block": r["index"], f"outlier_percent_{suffix}": r.get("outlier_ratio"),
             f"allocated_{suffix}": r.get("target_sparsity"), f"achieved_{suffix}": r.get("sparsity")}
            for r in run.record.get("blocks") or []]
    return pd.DataFrame(rows)


def most_outlying_module(run: RunInside) -> tuple[int, str]:
    """The module with the most outlier channels (norm above M x mean); for a run without statistics, its first module."""
    if not run.has_channels:
        return run.modules()[0]
    return max(run.modules(), key=lambda key: int(outlier_channels(run.channel(*key)).sum()))


def most_different_module(a: RunInside, b: RunInside) -> tuple[int, str]:
    """The module where two runs' masks agree least (lowest Jaccard): where the classroom story starts."""
    per_module = a.agreement_with(b)
    row = per_module.sort_values("jaccard", kind="stable").iloc[0]
    return int(row["block"]), str(row["module"])
