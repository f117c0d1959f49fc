"""One run end to end (layer 5): what a run is (`spec`), how it goes (`pipeline`), how its model is
measured (`evaluate`), a streamed run's plumbing (`streamed`), the saved folder and its card
(`saved`, `card`), and the store that keeps every run (`store`)."""

from .store import RunRecord, RunStore, eval_record, run_record, runs_table, write_json

__all__ = ["RunRecord", "RunStore", "eval_record", "run_record", "runs_table", "write_json"]
