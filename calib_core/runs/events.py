"""The run's own stage events around the engine's (prune/events.py): what the CLI prints, the app's
live views draw and a job's event file keeps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class PipelineEvent:
    """Stage messages around the engine's own events: run, load, calibration, estimate, eval (one
    perplexity source starts), ppl, cloze, zeroshot, saved, push; `at` is when (seconds since the epoch)."""

    stage: str
    message: str
    data: dict = field(default_factory=dict)
    kind: str = "pipeline"
    at: float = field(default_factory=time.time)
