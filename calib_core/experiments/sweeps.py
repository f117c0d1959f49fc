"""Sweeps: a grid of calibration sources x strategies x methods x sparsities x nsamples x seeds for one model.

Every point is an ordinary run in the run store, tagged with the sweep's name and a key derived
from the point's settings, so a restarted sweep skips the points that already finished. The model
is loaded once; before each point its dense weights are restored from an in-memory copy (this
costs one extra copy of the weights in RAM, instead of a reload from disk per point).

Grid file (YAML or JSON):

    name: wiki-vs-news
    model: smollm2-135m
    calibration: [builtin:wiki, builtin:news, set:selfgen]
    strategies: [random, least-ppl, {strategy: unique-tokens, pool_factor: 20}]   # data/strategies/
    methods: [wanda, {method: owl, base: wanda}]     # a name or PruneConfig fields
    sparsities: [0.5, 0.6, "2:4"]                     # a fraction (unstructured) or N:M
    nsamples: [32]
    seqlen: 512
    seeds: [0, 1, 2, 3, 4]
    eval: [builtin:wiki]
    eval_windows: 32
    mode: document                                    # document | concat | document_pad
    concat_separator: "\\n\\n"                        # concat mode only
    ppl_protocol: heldout                             # heldout | wikitext2
    cloze_items: 0                                    # 4-way cloze items per eval source (0: none)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .. import assets
from ..data.sources import DEFAULT_CONCAT_SEPARATOR, check_mode, check_windows_fit
from ..data.strategies import RANDOM, STRATEGIES, check_strategy, describe_strategy, non_default
from ..errors import CalibLabError, ConfigError, PruningCancelled
from ..prune import PruneConfig
from ..prune.methods import all_options
from ..runs.events import PipelineEvent
from ..runs.pipeline import run_prune
from ..runs.spec import EvalSpec, RunSpec

MAX_SWEEP_POINTS = 10_000
# The config fields every point's key holds. Options added since (a new method's) enter a key only when
# set away from their default, so the points of earlier sweeps keep their keys.
KEYED_CONFIG_FIELDS = frozenset({
    "method", "sparsity", "pattern", "base", "sparsegpt_blocksize", "sparsegpt_damp", "dsnot_threshold",
    "dsnot_cycles", "dsnot_var_power", "dsnot_sublayers", "dsnot_rule", "dsnot_sparsegpt_init",
    "dsnot_threshold_scale", "owl_nm_rule", "owl_m", "owl_lambda", "propagate", "batch_size", "recon_tokens",
    "device"})


@dataclass
class SweepGrid:
    name: str
    model: str = assets.DEFAULT_MODEL
    calibration: list[str] = field(default_factory=lambda: ["builtin:wiki"])
    strategies: list = field(default_factory=lambda: ["random"])  # a name or {strategy: NAME, SETTING: VALUE}
    methods: list = field(default_factory=lambda: ["wanda"])
    sparsities: list = field(default_factory=lambda: [0.5])
    nsamples: list[int] = field(default_factory=lambda: [32])
    seqlen: int = 512
    seeds: list[int] = field(default_factory=lambda: [0])
    eval: list[str] = field(default_factory=lambda: ["builtin:wiki"])
    eval_windows: int | None = 32
    mode: str = "document"
    concat_separator: str = DEFAULT_CONCAT_SEPARATOR
    ppl_protocol: str = "heldout"
    cloze_items: int = 0  # 4-way cloze items per eval source (metrics/cloze.py); 0: perplexity only
    dtype: str = "float32"
    keep_masks: bool = False  # 13 MB per point for SmolLM2: opt in for mask agreement
    device: str = "auto"  # where every point computes; not part of a point's key (same results, rounding aside)

    @classmethod
    def from_file(cls, path: str | Path) -> SweepGrid:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Sweep grid file '{path}' does not exist.")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"'{path.name}': a sweep grid is a .yaml, .yml or .json file.")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data) -> SweepGrid:
        if not isinstance(data, dict) or not data.get("name"):
            raise ConfigError("A sweep grid is a mapping with at least a 'name'.")
        name = str(data["name"])
        if name.startswith(".") or any(c in name for c in "/\\\0") or len(name) > 100:
            raise ConfigError(f"Sweep name '{name[:100]}' names export folders: at most 100 characters, no '/' or "
                              f"'\\', not starting with '.'.")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown sweep grid keys {sorted(unknown)}; known: {sorted(known)}.")
        grid = cls(**data)
        for key in ("calibration", "strategies", "methods", "sparsities", "nsamples", "seeds", "eval"):
            if not isinstance(getattr(grid, key), list) or (key != "eval" and not getattr(grid, key)):
                raise ConfigError(f"Sweep grid '{key}' must be a non-empty list.")
        grid.check_bounds()
        from ..devices import resolve_device
        from ..metrics.perplexity import check_protocol

        resolve_device(grid.device)  # a device this machine lacks is refused before any point runs
        check_mode(grid.mode)
        check_protocol(grid.ppl_protocol)
        grid.points()  # every point's config is validated before anything runs
        return grid

    def size(self) -> int:
        """Points before magnitude's duplicates are merged, counted without building them."""
        return math.prod(len(getattr(self, key)) for key in ("calibration", "strategies", "methods", "sparsities",
                                                             "nsamples", "seeds"))

    def check_bounds(self, max_points: int = MAX_SWEEP_POINTS, max_nsamples: int | None = None,
                     max_seqlen: int | None = None) -> None:
        """Counts that are whole numbers in range, a grid of at most `max_points` points, and samples
        whose ids fit in memory, all checked before a point is built or run."""
        for key in ("nsamples", "seeds"):
            values = getattr(self, key)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= (1 if key == "nsamples" else 0)
                       for v in values):
                raise ConfigError(f"Sweep grid '{key}' must hold whole numbers >= {1 if key == 'nsamples' else 0}, "
                                  f"got {values}.")
        for key, low in (("seqlen", 2), ("eval_windows", 1), ("cloze_items", 0)):
            value = getattr(self, key)
            if not (value is None and key == "eval_windows") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"Sweep grid '{key}' must be a whole number >= {low}, got {value!r}.")
        if self.size() > max_points:
            raise ConfigError(f"Sweep grid '{self.name}' has {self.size()} points; at most {max_points} are allowed. "
                              f"Split it into several sweeps.")
        if max_nsamples is not None and max(self.nsamples) > max_nsamples:
            raise ConfigError(f"nsamples {max(self.nsamples)} is above this server's limit of {max_nsamples}.")
        if max_seqlen is not None and self.seqlen > max_seqlen:
            raise ConfigError(f"seqlen {self.seqlen} is above this server's limit of {max_seqlen}.")
        check_windows_fit(max(self.nsamples), self.seqlen)

    def context(self) -> dict:
        """What every point shares and its result depends on: part of each point's key, so a grid
        changed in any of these reruns its points instead of reusing stale ones."""
        context = {"model": self.model, "dtype": self.dtype, "seqlen": self.seqlen, "mode": self.mode,
                   "eval": self.eval, "eval_windows": self.eval_windows}
        # Options added later enter the key only when changed, so points of earlier sweeps keep their keys.
        if self.concat_separator != DEFAULT_CONCAT_SEPARATOR:
            context["concat_separator"] = self.concat_separator
        if self.ppl_protocol != "heldout":
            context["ppl_protocol"] = self.ppl_protocol
        if self.cloze_items:
            context["cloze_items"] = self.cloze_items
        return context

    def spec(self, point: SweepPoint) -> RunSpec:
        """The run of one point (the local and the Ray runner run the same thing)."""
        return RunSpec(model=self.model, dtype=self.dtype, calib=point.calibration, nsamples=point.nsamples,
                       seqlen=self.seqlen, seed=point.seed, mode=self.mode, concat_separator=self.concat_separator,
                       strategy=point.strategy, strategy_options=dict(point.strategy_options),
                       config=replace(point.config, device=self.device),
                       evaluation=EvalSpec(self.eval, windows=self.eval_windows, protocol=self.ppl_protocol,
                                           cloze_items=self.cloze_items),
                       keep_masks=self.keep_masks)

    def points(self) -> list[SweepPoint]:
        out = []
        strategies = [_strategy_entry(entry) for entry in self.strategies]
        for calib, (strategy, settings), method, setting, nsamples, seed in itertools.product(
            self.calibration, strategies, self.methods, self.sparsities, self.nsamples, self.seeds
        ):
            options = {"method": method} if isinstance(method, str) else dict(method)
            if isinstance(setting, str) and ":" in setting:
                options["pattern"] = setting
            else:
                options["sparsity"] = float(setting)
            config = PruneConfig(**options).resolved()
            needs_data = config.needs_calibration
            out.append(SweepPoint(calib if needs_data else None, config, nsamples if needs_data else 0,
                                  seed if needs_data else 0, self.context(), strategy if needs_data else RANDOM,
                                  settings if needs_data else {}))
        unique = {p.key: p for p in out}  # magnitude ignores source and seed: run it once per setting
        return list(unique.values())


@dataclass
class SweepPoint:
    calibration: str | None
    config: PruneConfig
    nsamples: int
    seed: int
    context: dict = field(default_factory=dict)
    strategy: str = RANDOM
    strategy_options: dict = field(default_factory=dict)  # the strategy's non-default settings

    @property
    def key(self) -> str:
        described = [self.calibration, _keyed(self.config), self.nsamples, self.seed, self.context]
        if self.strategy != RANDOM:  # random points keep the keys of sweeps made before strategies existed
            described.append([self.strategy, self.strategy_options])
            revision = STRATEGIES[self.strategy].revision
            if revision:  # a strategy never revised keeps its earlier keys
                described.append({"revision": revision})
        return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def label(self) -> str:
        setting = self.config.pattern if ":" in self.config.pattern else self.config.sparsity
        if self.calibration is None:  # magnitude: no data, so no draw to name
            return f"{self.config.method} {setting} (no calibration data)"
        chosen = "" if self.strategy == RANDOM else f" by {describe_strategy(self.strategy, self.strategy_options)}"
        return f"{self.config.method} {setting} on {self.calibration}{chosen} n={self.nsamples} seed={self.seed}"


def _strategy_entry(entry) -> tuple[str, dict]:
    """(name, non-default settings) of a grid's strategies entry, checked now (before any point runs)."""
    if isinstance(entry, str):
        name, settings = entry, {}
    elif isinstance(entry, dict) and isinstance(entry.get("strategy"), str):
        name, settings = entry["strategy"], {k: v for k, v in entry.items() if k != "strategy"}
    else:
        raise ConfigError(f"A strategies entry is a name or a mapping with a 'strategy' key, got {entry!r}.")
    resolved = check_strategy(name, settings)
    return name, non_default(name, resolved)


def _keyed(config: PruneConfig) -> dict:
    """The part of a point's config its key holds (KEYED_CONFIG_FIELDS, and later options when changed)."""
    later = {o.field: o.default for o in all_options() if o.field not in KEYED_CONFIG_FIELDS}
    return {k: v for k, v in config.as_dict().items() if k in KEYED_CONFIG_FIELDS or v != later.get(k)}


@dataclass
class SweepSummary:
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)


def plan_sweep(grid: SweepGrid, store, points=None, emit=None, where: str = "") -> tuple[list[SweepPoint], SweepSummary]:
    """The points still to run (default: the grid's points not finished in `store`) and a summary that
    counts the skipped ones; says so through `emit`. Every runner plans through this."""
    points = grid.points() if points is None else points
    foreign = [p for p in points if p.context != grid.context()]
    if foreign:
        raise ConfigError(f"{len(foreign)} points were built for another model/seqlen/eval than grid {grid.name}.")
    done = store.finished_points(grid.name)
    todo = [p for p in points if p.key not in done]
    summary = SweepSummary(skipped=len(points) - len(todo))
    if emit is not None:
        emit(PipelineEvent("sweep", f"sweep {grid.name}{where}: {len(points)} points, {summary.skipped} already "
                                    f"finished", {"points": len(points), "todo": len(todo)}))
    return todo, summary


def run_sweep(grid: SweepGrid, store=None, on_event=None, cancel=None, points=None) -> SweepSummary:
    """Run the points not yet finished; a failing point is recorded and the sweep goes on, a cancel
    stops it (finished points stay finished). `points` (default: the grid's) lets a caller order or
    merge points of grids that share the grid's context, e.g. several seeds of every question first."""
    from ..models import load_model
    from ..runs import RunStore

    emit = on_event or (lambda event: None)
    store = store or RunStore()
    todo, summary = plan_sweep(grid, store, points, emit)
    if not todo:
        return summary
    loaded = load_model(grid.model, dtype=grid.dtype)
    dense = {name: tensor.detach().clone() for name, tensor in loaded.model.state_dict().items()}
    selections: dict = {}  # a strategy's windows, chosen once on the dense model for every point sharing them
    for number, point in enumerate(todo, 1):
        if cancel is not None and cancel.is_set():
            raise PruningCancelled(f"Sweep {grid.name} cancelled; {summary.ran} points ran, rerun to resume.")
        loaded.model.load_state_dict(dense)
        emit(PipelineEvent("sweep", f"point {number}/{len(todo)}: {point.label()}", {"key": point.key}))
        try:
            record = run_prune(grid.spec(point), on_event, cancel, store, loaded=loaded, sweep=grid.name,
                               point_key=point.key, selections=selections)
        except PruningCancelled:
            raise
        except CalibLabError as exc:
            summary.failed.append(f"{point.label()}: {exc}")
            continue
        summary.ran += 1
        summary.run_ids.append(record["run_id"])
    loaded.model.load_state_dict(dense)
    return summary
