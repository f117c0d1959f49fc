"""runs, sweep and inspect: the run store listed, grids of runs, and inside a layer of one run or two."""

from __future__ import annotations

import sys

from .options import add_ray_args, sweep_runner


def add_runs_arguments(runs) -> None:
    runs.add_argument("--show", type=int, default=None, metavar="ID", help="print one run's full record")


def cmd_runs(args) -> int:
    import json

    from ..runs import RunStore

    store = RunStore()
    if args.show is not None:
        print(json.dumps(store.get(args.show), indent=2))
        return 0
    runs = store.list()
    if store.read_only_reason:
        print(f"note: the run store {store.path} is read-only ({store.read_only_reason}); new runs cannot be "
              f"recorded until that is fixed", file=sys.stderr)
    print(f"{'id':>4} {'status':<11} {'created':<19} {'model':<16} {'method':<10} {'sparsity':<8} ppl")
    for run in runs:
        ppl = ", ".join(f"{p['ppl']:.2f}" for p in (run["record"] or {}).get("perplexity", []))
        print(f"{run['id']:>4} {run['status']:<11} {run['created']:<19} {str(run['model'])[:16]:<16} "
              f"{str(run['method']):<10} {str(run['sparsity']):<8} {ppl}")
    return 0


def add_sweep_arguments(sweep) -> None:
    sweep.add_argument("grid", metavar="GRID.yaml", help="grid file (.yaml/.yml/.json), see calib_core/experiments/sweeps.py")
    sweep.add_argument("--dry-run", action="store_true", help="list the points and which already finished")
    add_ray_args(sweep)
    sweep.add_argument("--figures", default=None, metavar="DIR",
                       help="afterwards, write each method's charts (HTML, and PNG where kaleido works) and a "
                            "summary CSV of the sweep to DIR")


def cmd_sweep(args) -> int:
    from ..experiments.sweeps import SweepGrid
    from ..runs import RunStore

    grid = SweepGrid.from_file(args.grid)
    if args.figures:
        from ..files import check_output_folder

        check_output_folder(args.figures, overwrite=True)  # figures replace their own files
    store = RunStore()
    if args.dry_run:
        from ..studies.study import Plan

        print("\n".join(Plan(grid.points(), store.finished_points(grid.name)).lines()))
        return 0

    def on_event(event):
        if getattr(event, "kind", "") == "pipeline" and event.stage in ("sweep", "ppl", "run"):
            print(event.message, flush=True)

    summary = sweep_runner(args)(grid, store, on_event)
    print(f"sweep {grid.name}: {summary.ran} ran, {summary.skipped} skipped (finished before), "
          f"{len(summary.failed)} failed")
    for failure in summary.failed:
        print(f"failed: {failure}", file=sys.stderr)
    if args.figures:
        _export_sweep(store, grid.name, args.figures)
    return 1 if summary.failed else 0


def _export_sweep(store, name: str, folder: str) -> None:
    from ..experiments.stats import sweep_frame
    from ..experiments.sweep_figures import export_sweep

    _written, notes = export_sweep(sweep_frame(store, name), folder)
    for note in notes:
        print(f"note: {note}" if note.startswith("PNG skipped") else note, file=sys.stderr)
    print(f"figures: {folder}")


def add_inspect_arguments(inspect) -> None:
    inspect.add_argument("runs", nargs="+", type=int, metavar="RUN", help="one run id, or two to compare")
    inspect.add_argument("--block", type=int, default=None, help="decoder block (default: where two runs' masks "
                                                                 "differ most; for one run, the module with most outliers)")
    inspect.add_argument("--module", default=None, help="prunable module of the block, e.g. mlp.down_proj")
    inspect.add_argument("--top-k", type=int, default=None, help="channels the mask difference is attributed to "
                                                                 "(default: the outlier channels of either run)")
    inspect.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG, HTML and CSV of each view")


def cmd_inspect(args) -> int:
    from ..errors import ConfigError
    from ..experiments.inside_figures import export_views, module_views
    from ..metrics import inside
    from ..runs import RunStore

    if len(args.runs) > 2:
        raise ConfigError("inspect takes one run, or two to compare.")
    store = RunStore()
    runs = [inside.open_run(store, run_id) for run_id in args.runs]
    a, b = runs[0], runs[1] if len(runs) == 2 else None
    block, module = args.block, args.module
    if block is None or module is None:
        default = inside.most_different_module(a, b) if b is not None else inside.most_outlying_module(a)
        block = default[0] if block is None else block
        module = default[1] if module is None else module
    views, notes = module_views(a, block, module, b, args.top_k)
    written, export_notes = export_views(views, args.out)
    print(f"block {block} {module}: " + "; ".join(f"{v.name}: {v.figure.layout.title.text.split('<br>')[0]}" for v in views))
    for note in notes + export_notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(written)} files to {args.out}")
    return 0
