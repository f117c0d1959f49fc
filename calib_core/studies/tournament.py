"""The strategy tournament: every calibration strategy at the same nsamples x seqlen, pruned with each
method at each setting over several seeds, on each model, and measured per capability (held-out
perplexity on each builtin domain, and the 4-way cloze proxy), never as one number.

Entries: the strategies of data/strategies/ on one pool source (default builtin:wiki), plus `mix`: the
random draw from a uniform mix of the four builtin sources (mix: sources, data/mix.py). Every point is an
ordinary run under one sweep name, so an interrupted tournament resumes where it stopped (and a runs CSV
of an earlier report, `previous`, carries its points over to another machine); the first `early_seeds`
seeds of every entry on every model run before the rest, so a cut-short run still compares every entry.

The verdict rules were fixed before any result was seen (VERDICT_RULES); the report states them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from .. import assets
from ..data.sources import BUILTIN_SOURCES
from ..data.strategies import RANDOM, SELF_CALIBRATION
from ..errors import ConfigError
from ..experiments.sweeps import SweepGrid, SweepPoint, SweepSummary, run_sweep
from ..runs.events import PipelineEvent

MIX = "mix"
UNIFORM_MIX = "mix:" + ",".join(f"{source}=1" for source in BUILTIN_SOURCES)
POWERED_SEEDS = 10
PROTOCOL_DATE = "2026-12-07"
# Why the scale, from the pilot's table (stated in the report's protocol).
PROTOCOL_CHOICE = (
    "The scale is the pilot's 128 x 512 with 10 seeds: there every perplexity's minimum detectable effect is at "
    "most 2% (wiki 1.0%, news 1.3%, books 1.4%, code 2.0%) and the cloze's 0.9 points. At 32 x 512 only wiki's "
    "meets the 2% target (news 2.1%, books 2.6%, code 4.0%) for about 0.6 of the time per run, and 16 seeds there "
    "would cost as much as 10 at 128 x 512 and still leave code at 2.8%. The papers calibrate with 128 samples too.")
# The first tournament (2026-12-03, docs/results/strategies-2026-12-03/): 8 x 256 calibration tokens, 2 x 256
# evaluation tokens and 10 cloze items per domain, 5 seeds. Its runs and the advisor validation's use it.
ROUND_ONE = dict(extra_sources=[], seeds=5, nsamples=8, seqlen=256, eval_windows=2, cloze_items=10, early_seeds=3,
                 name="tournament")
ROUND_ONE_RUNS = "docs/results/strategies-2026-12-03/strategies-runs.csv"


@dataclass
class TournamentSettings:
    """The powered protocol by default (fixed 2026-12-07 from the pilot, before any of its runs; stated in
    docs/results/strategies.md). ROUND_ONE holds the first tournament's settings."""

    models: list[str] = field(default_factory=lambda: [assets.DEFAULT_MODEL, "gemma3-270m"])
    source: str = "builtin:wiki"  # the pool every strategy draws from (mix: the four builtin sources)
    strategies: list[str] = field(default_factory=lambda: [
        RANDOM, "least-ppl", "unique-tokens", "activation-kmeans", SELF_CALIBRATION, "icl-format"])
    mix: str | None = UNIFORM_MIX  # an entry drawn at random from this mix (None: no mix entry)
    # Entries drawn at random from other sources: every domain's own single-source draw, the mix's baselines.
    extra_sources: list[str] = field(default_factory=lambda: [s for s in BUILTIN_SOURCES if s != "builtin:wiki"])
    methods: list[str] = field(default_factory=lambda: ["wanda", "sparsegpt"])
    settings: list = field(default_factory=lambda: [0.5, 0.6, "2:4"])
    seeds: int = POWERED_SEEDS
    nsamples: int = 128  # a pool of 1,280 windows for the pool strategies
    seqlen: int = 512
    mode: str = "concat"
    eval: list[str] = field(default_factory=lambda: list(BUILTIN_SOURCES))
    eval_windows: int = 64  # 32k tokens per domain
    cloze_items: int = 100  # per domain: 400 items, the same for every run
    early_seeds: int = 5
    name: str = "tournament-powered"
    dtype: str = "auto"  # see resolved_dtype: the earlier runs' dtype, else the device's native one
    # A runs CSV of this tournament written earlier (e.g. the committed strategies-runs.csv, measured on another
    # machine): its rows whose point key is one of these points count as finished and join the report.
    previous: str | None = None

    def resolved_dtype(self) -> str:
        """The dtype every point computes in (its key names it): `dtype` when set; for "auto", the dtype the
        earlier runs in `previous` were made in, so a tournament continued on another machine stays in one
        dtype (on a CPU without its arithmetic, through half_matmul; run_tournament says so), else
        the device's native dtype (devices.native_dtype)."""
        from ..devices import native_dtype

        if self.dtype != "auto":
            return self.dtype
        return self.earlier_dtype() or native_dtype()

    def earlier_dtype(self) -> str | None:
        """The dtype whose points the rows of `previous` are (None without `previous`, or when none match)."""
        path = Path(self.previous) if self.previous else None
        if path is None or not path.is_file():
            return None
        described = json.dumps({k: v for k, v in self.as_dict().items() if k not in ("dtype", "previous")},
                               sort_keys=True)
        return _dtype_of_rows(str(path.resolve()), path.stat().st_mtime_ns, described)

    def grids(self, model: str) -> list[SweepGrid]:
        """The source x strategies grid and the mix grid of one model (they share sampling and eval)."""
        base = dict(name=self.name, model=model, methods=self.methods, sparsities=self.settings,
                    nsamples=[self.nsamples], seqlen=self.seqlen, seeds=list(range(self.seeds)), eval=self.eval,
                    eval_windows=self.eval_windows, mode=self.mode, cloze_items=self.cloze_items,
                    dtype=self.resolved_dtype())
        grids = [SweepGrid.from_dict({**base, "calibration": [self.source], "strategies": self.strategies})]
        if self.mix:
            grids.append(SweepGrid.from_dict({**base, "calibration": [self.mix], "strategies": [RANDOM]}))
        if self.extra_sources:
            grids.append(SweepGrid.from_dict({**base, "calibration": self.extra_sources, "strategies": [RANDOM]}))
        return grids

    def points(self, model: str) -> list[SweepPoint]:
        """Every entry's early seeds first, then the rest; within each, one cell (method and setting) at a time,
        seed by seed across the entries, so that a run cut short leaves whole paired comparisons of the first
        cells rather than a few seeds of everything (a seed's selection is made once and shared by its cells)."""
        every = [p for grid in self.grids(model) for p in grid.points()]
        settings = [str(s) for s in self.settings]

        def order(numbered):
            index, p = numbered
            setting = p.config.pattern if ":" in p.config.pattern else str(p.config.sparsity)
            return (p.seed >= self.early_seeds, self.methods.index(p.config.method),
                    settings.index(setting) if setting in settings else len(settings), p.seed, index)

        return [p for _, p in sorted(enumerate(every), key=order)]

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=8)
def _dtype_of_rows(path: str, modified_ns: int, described: str) -> str | None:
    """The dtype under which the most point keys of the CSV at `path` are points of the tournament
    `described` (its settings but dtype and previous, as JSON); cached per file version."""
    import pandas as pd

    from ..models import DTYPES

    frame = pd.read_csv(path)
    if "point_key" not in frame.columns:
        return None  # previous_frame says what is wrong with that file
    keys = set(frame["point_key"])
    settings = TournamentSettings(**json.loads(described))
    matches = {dtype: sum(p.key in keys for model in settings.models for p in replace(settings, dtype=dtype).points(model))
               for dtype in DTYPES}
    best = max(matches, key=matches.get)
    return best if matches[best] else None


def dtype_notice(settings: TournamentSettings) -> str | None:
    """What a user continuing earlier runs should know when their half dtype has no arithmetic on this CPU: the
    points run here multiply in float32 and round (half_matmul), so they differ a little from the earlier machine's,
    as bfloat16 results on two kinds of CPU do anyway (bench/half_matmul_bench.py: 99.5% the same kept weights). None when there is nothing to say."""
    from ..devices import resolve_device
    from ..half_matmul import cpu_has_half_arithmetic
    from ..models import DTYPES

    dtype = settings.resolved_dtype()
    if settings.earlier_dtype() != dtype or dtype == "float32" or resolve_device("auto").type != "cpu" \
            or cpu_has_half_arithmetic(DTYPES[dtype]):
        return None
    return (f"continuing {settings.previous}'s runs in {dtype}, which this CPU has no arithmetic for: its Linear "
            f"layers multiply in float32 and round to {dtype} (the same products, summed in another order), so "
            f"points run here differ a little from the earlier machine's (about 99.5% the same kept weights)")


# The pilot that fixes the powered protocol (docs/results/strategies.md states its table): the seed noise of
# random draws at larger scales, Wanda 50% on the bundled model, 8 seeds, 64 x 512 = 32k evaluation tokens and
# 100 cloze items per domain. Its points are ordinary tournament points (keyed alike), so a protocol of the same
# scale reuses them.
PILOT_SCALES = [(32, 512), (128, 512)]
PILOT = dict(models=[assets.DEFAULT_MODEL], strategies=[RANDOM], mix=None, extra_sources=[], methods=["wanda"], settings=[0.5],
             seeds=8, early_seeds=8, eval_windows=64, cloze_items=100, name="tournament-pilot")


def pilot_settings() -> list[TournamentSettings]:
    """One settings per pilot scale, smallest first."""
    return [TournamentSettings(**PILOT, nsamples=nsamples, seqlen=seqlen) for nsamples, seqlen in PILOT_SCALES]


def pilot_frame(store):
    """Every pilot scale's finished runs, with the scale's nsamples and seqlen."""
    import pandas as pd

    frames = []
    for settings in pilot_settings():
        frame = tournament_frame(settings, store)
        if not frame.empty:
            frames.append(frame.assign(nsamples=settings.nsamples, seqlen=settings.seqlen))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["nsamples", "seqlen"])


QUICK = dict(models=[assets.DEFAULT_MODEL], methods=["wanda"], settings=[0.5], seeds=2, nsamples=4, seqlen=128,
             eval_windows=1, cloze_items=10, early_seeds=2, name="tournament-quick")


def entry_of(calibration: str, strategy: str, source: str | None = None) -> str:
    """A run's tournament entry: its strategy, `mix` for the random draw from a mix, or the source itself for a
    random draw from a source other than the tournament's pool `source` (extra_sources)."""
    if strategy == RANDOM and str(calibration).startswith("mix:"):
        return MIX
    if strategy == RANDOM and source is not None and calibration != source:
        return calibration
    return strategy


def finished_keys(settings: TournamentSettings, store) -> set[str]:
    """Point keys finished in `store` or carried in by the settings' `previous` runs CSV."""
    earlier = set(previous_frame(settings)["point_key"]) if settings.previous else set()
    return earlier | store.finished_points(settings.name)


def run_tournament(settings: TournamentSettings, store=None, on_event=None, cancel=None,
                   references: bool = True) -> SweepSummary:
    """Every model's points not yet finished, then (with `references`) each model's dense reference (its
    perplexities on the same windows and the cost of one dense forward over a pool), measured once."""
    from ..runs import RunStore

    store = store or RunStore()
    emit = on_event or (lambda event: None)
    summary = SweepSummary()
    earlier = set(previous_frame(settings)["point_key"]) if settings.previous else set()
    finished = finished_keys(settings, store)
    notice = dtype_notice(settings)
    if notice and any(p.key not in finished for m in settings.models for p in settings.points(m)):
        emit(PipelineEvent("sweep", notice))
    for early in (True, False):  # every model's early seeds before any model's later ones
        for model in settings.models:
            phase = [p for p in settings.points(model) if (p.seed < settings.early_seeds) == early]
            points = [p for p in phase if p.key not in earlier]
            seeds = f"seeds < {settings.early_seeds}" if early else f"seeds >= {settings.early_seeds}"
            carried = f", {len(phase) - len(points)} finished in {settings.previous}" if earlier else ""
            emit(PipelineEvent("sweep", f"tournament on {model}, {seeds}{carried}"))
            part = run_sweep(settings.grids(model)[0], store, on_event, cancel, points=points)
            summary.ran += part.ran
            summary.skipped += part.skipped + len(phase) - len(points)
            summary.failed += part.failed
            summary.run_ids += part.run_ids
    for model in settings.models if references else []:
        ensure_reference(settings, model, store)
    return summary


def reference_path(settings: TournamentSettings, store):
    return store.path.parent / f"{settings.name}-reference.json"


def known_reference(settings: TournamentSettings, model: str, store) -> dict | None:
    """The model's dense reference kept beside the run store, when it was measured in the tournament's dtype
    (references written before they named one count as such)."""
    path = reference_path(settings, store)
    reference = (json.loads(path.read_text()) if path.exists() else {}).get(model)
    if reference is None or reference.get("dtype", settings.resolved_dtype()) != settings.resolved_dtype():
        return None
    return reference


def ensure_reference(settings: TournamentSettings, model: str, store) -> dict:
    """Per model, measured once and kept beside the run store: the dense model's perplexities and cloze
    accuracy on the tournament's eval, and the seconds of one dense forward (logits included) over a pool
    of 10 x nsamples windows, the unit the selection costs are stated in."""
    reference = known_reference(settings, model, store)
    if reference is not None:
        return reference
    path = reference_path(settings, store)
    known = json.loads(path.read_text()) if path.exists() else {}
    dtype = settings.resolved_dtype()
    from ..data.sources import build_calibration
    from ..data.strategies import POOL_FACTOR, window_cross_entropy
    from ..models import load_model

    loaded = load_model(model, dtype=dtype)
    pool = build_calibration(settings.source, loaded.tokenizer, POOL_FACTOR.default * settings.nsamples,
                             settings.seqlen, 0, settings.mode)
    started = time.perf_counter()
    window_cross_entropy(loaded.model, pool.input_ids, pool.unpadded_lengths)
    forward = time.perf_counter() - started
    known[model] = {"dtype": dtype, "pool_forward_seconds": forward, "pool_windows": pool.nsamples,
                    "dense": dense_capabilities(settings, loaded)}
    path.write_text(json.dumps(known, indent=2))
    return known[model]


CLOZE = "cloze acc (mean of domains)"


def dense_capabilities(settings: TournamentSettings, loaded) -> dict[str, float]:
    """The loaded dense model on the tournament's evaluation: perplexity per domain, mean cloze accuracy."""
    from ..metrics.cloze import cloze_accuracy
    from ..metrics.perplexity import perplexity

    capabilities = {f"ppl {spec}": perplexity(loaded.model, loaded.tokenizer, spec, seqlen=settings.seqlen,
                                              max_windows=settings.eval_windows).ppl for spec in settings.eval}
    if settings.cloze_items:
        accuracies = [cloze_accuracy(loaded.model, loaded.tokenizer, spec, items=settings.cloze_items).acc
                      for spec in settings.eval]
        capabilities[CLOZE] = sum(accuracies) / len(accuracies)
    return capabilities


# Written by the report beside strategies-runs.csv: each model's dense perplexities and cloze accuracy in the
# tournament's dtype, so a report written on another machine from that CSV (`previous`) still states them.
# The seconds of the dense forward stay beside each run store: they are that machine's unit.
DENSE_REFERENCE_FILE = "strategies-dense.json"


def carried_dense(settings: TournamentSettings) -> dict[str, dict]:
    """Per model, the dense capabilities an earlier report wrote beside `previous`, in the tournament's dtype."""
    path = Path(settings.previous).with_name(DENSE_REFERENCE_FILE) if settings.previous else None
    if path is None or not path.is_file():
        return {}
    known = json.loads(path.read_text())
    return {model: known[model]["dense"] for model in settings.models
            if model in known and known[model].get("dtype") == settings.resolved_dtype()}


THIS_STORE = "this run store"


def previous_frame(settings: TournamentSettings):
    """The rows of `settings.previous` that are points of this tournament (matched by point key, which names
    the model, dtype, eval and every grid setting, so a CSV of other settings contributes nothing)."""
    import pandas as pd

    path = Path(settings.previous)
    if not path.is_file():
        raise ConfigError(f"No earlier tournament runs at {path} (expected a strategies-runs.csv).")
    frame = pd.read_csv(path)
    if "point_key" not in frame.columns:
        raise ConfigError(f"{path} has no point_key column: it was not written by this tournament's report.")
    keys = {p.key for model in settings.models for p in settings.points(model)}
    frame = frame[frame["point_key"].isin(keys)].copy()
    # Rows that report's own store made are, seen from here, rows of that CSV.
    origin = frame["origin"] if "origin" in frame else pd.Series(None, index=frame.index, dtype=object)
    frame["origin"] = origin.where(origin.notna() & (origin != THIS_STORE), path.name)
    return frame


def tournament_frame(settings: TournamentSettings, store):
    """The finished runs of the tournament's points: one row per run with its model, entry, every
    capability and the seconds its selection took (None when a sweep reused an earlier selection), and
    `origin`: this run store, or the earlier CSV a row came from (a point run here replaces it)."""
    import pandas as pd

    frame = _store_frame(settings, store)
    if settings.previous:
        earlier = previous_frame(settings)
        if not frame.empty:
            earlier = earlier[~earlier["point_key"].isin(set(frame["point_key"]))]
        frame = pd.concat([earlier, frame], ignore_index=True) if not frame.empty else earlier.reset_index(drop=True)
    return frame


def _store_frame(settings: TournamentSettings, store):
    import pandas as pd

    from ..experiments.stats import runs_frame

    by_key = {p.key: (model, p) for model in settings.models for p in settings.points(model)}
    runs = [r for r in store.sweep_runs(settings.name) if r.get("point_key") in by_key]
    frame = runs_frame(runs)
    if frame.empty:
        return frame
    records = {r["id"]: r["record"] for r in runs}
    keys = {r["id"]: r["point_key"] for r in runs}
    frame["model"] = [by_key[keys[i]][0] for i in frame["run_id"]]
    frame["entry"] = [entry_of(by_key[keys[i]][1].calibration, by_key[keys[i]][1].strategy, settings.source)
                      for i in frame["run_id"]]
    cloze = [c for c in frame.columns if c.startswith("cloze acc builtin:")]
    if cloze:
        frame[CLOZE] = frame[cloze].mean(axis=1)
    frame["selection_seconds"] = [_selection_seconds(records[i]) for i in frame["run_id"]]
    frame["run_seconds"] = [_run_seconds(records[i]) for i in frame["run_id"]]
    frame["point_key"] = [keys[i] for i in frame["run_id"]]
    # Where each row was computed: CPU results differ between kinds in the last bits, and a half dtype without
    # the CPU's arithmetic multiplies in float32 (half_matmul). Rows carried from earlier CSVs may lack them.
    for column in ("torch_threads", "cpu", "cpu_half_arithmetic"):
        frame[column] = [(records[i].get("versions") or {}).get(column) for i in frame["run_id"]]
    frame["origin"] = THIS_STORE
    return pd.DataFrame(frame)


def _selection_seconds(record: dict) -> float | None:
    """The seconds this run's windows took to choose (a random draw: its calibration time); None when the
    selection was reused from an earlier point."""
    strategy = (record.get("calibration") or {}).get("strategy")
    if strategy:
        return None if strategy.get("reused") else strategy.get("seconds")
    return (record.get("timings") or {}).get("calibration")


def _run_seconds(record: dict) -> float | None:
    """The seconds the run took on its machine: choosing its windows, pruning and every evaluation."""
    timings = record.get("timings") or {}
    if not timings:
        return None
    return sum(timings.get(part, 0) for part in ("calibration", "prune_total", "eval", "cloze"))


def capabilities(settings: TournamentSettings) -> list[str]:
    return [f"ppl {spec}" for spec in settings.eval] + ([CLOZE] if settings.cloze_items else [])
