"""What two runs did differently: every setting a run record states (the run's job, with the strategy that
chose its windows, its method's config, the environment it ran in), side by side where they differ."""

from __future__ import annotations

import json

# Where a run record keeps its settings, and the prefix each gets in the comparison.
SECTIONS = (("job", ""), ("config", "method."), ("versions", "environment."))


def settings_of(run: dict) -> dict[str, str]:
    """A run's settings flat, as text (a list or dict as JSON), named `FIELD` (the job), `method.FIELD` and
    `environment.FIELD`."""
    record = run.get("record") or {}
    flat: dict[str, str] = {}
    for section, prefix in SECTIONS:
        source = record.get(section) or (run.get("config") if section == "config" else None) or {}
        for name, value in source.items():
            flat[prefix + name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return flat


def settings_diff(run_a: dict, run_b: dict) -> tuple[list[dict], int]:
    """The settings where two runs differ (a setting only one run names shows '(not recorded)' for the
    other), and how many settings they share."""
    a, b = settings_of(run_a), settings_of(run_b)
    missing = "(not recorded)"
    rows = [{"setting": name, f"run {run_a['id']}": a.get(name, missing), f"run {run_b['id']}": b.get(name, missing)}
            for name in sorted(a.keys() | b.keys()) if a.get(name) != b.get(name)]
    return rows, len(a.keys() & b.keys()) - sum(1 for r in rows if r["setting"] in a and r["setting"] in b)
