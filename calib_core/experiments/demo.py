"""The two-minute classroom demo: the bundled model pruned by Wanda at 50%, calibrated once on wiki text and
once on code, with magnitude pruning (no data) as the reference; then the perplexity comparison and the
inside-a-layer views of the two Wanda runs at the module where their masks differ most.

A small sweep (8 x 128-token windows, 4 evaluation windows per domain, the machine's native dtype): an
interrupted or repeated demo resumes, and a finished one opens at once.
"""

from __future__ import annotations

from .. import assets
from ..models import resolve_dtype
from .sweeps import SweepGrid, run_sweep

DEMO_NAME = "classroom-demo"
SOURCES = {"wiki": "builtin:wiki", "code": "builtin:code"}


def demo_grid(model: str = assets.DEFAULT_MODEL, device: str = "auto") -> SweepGrid:
    return SweepGrid.from_dict(dict(
        name=DEMO_NAME, model=model, calibration=list(SOURCES.values()), methods=["wanda", "magnitude"],
        sparsities=[0.5], nsamples=[8], seqlen=128, seeds=[0], eval=list(SOURCES.values()), eval_windows=4,
        mode="concat", dtype=resolve_dtype("auto", device), keep_masks=True, device=device))


def run_demo(grid: SweepGrid, store=None, on_event=None, cancel=None):
    return run_sweep(grid, store, on_event, cancel)


def demo_runs(grid: SweepGrid, store) -> dict[str, int]:
    """The finished demo runs by role: wiki, code (the two Wanda runs) and magnitude."""
    keys = {p.key: p for p in grid.points()}
    roles = {}
    for run in store.sweep_runs(grid.name, status="finished"):
        point = keys.get(run.get("point_key"))
        if point is None:
            continue
        if point.config.method == "magnitude":
            roles["magnitude"] = run["id"]
        else:
            roles[next(role for role, source in SOURCES.items() if source == point.calibration)] = run["id"]
    return roles


def demo_links(grid: SweepGrid, store) -> dict[str, dict[str, str]] | None:
    """Query parameters of the Results page (the three runs) and of the Inside a layer page (the two Wanda
    runs at the module where their masks differ most); None until every demo run has finished."""
    from ..metrics import inside

    roles = demo_runs(grid, store)
    if set(roles) != {"wiki", "code", "magnitude"}:
        return None
    block, module = inside.most_different_module(inside.open_run(store, roles["wiki"]),
                                                 inside.open_run(store, roles["code"]))
    return {"results": {"runs": ",".join(str(roles[r]) for r in ("wiki", "code", "magnitude"))},
            "inside": {"a": str(roles["wiki"]), "b": str(roles["code"]), "block": str(block), "module": module}}
