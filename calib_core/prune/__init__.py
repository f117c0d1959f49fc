"""Pruning: the layer-wise engine and one module per method."""

from .capture import capture_block_inputs
from .config import PruneConfig
from .engine import PruneResult, prune_model
from .events import AllocationEvent, BlockRecord, ModuleRecord, StageEvent
from .masks import Pattern, parse_pattern
from .methods import METHODS, Method
from .options import Option

__all__ = [
    "METHODS", "Method", "Option", "PruneConfig", "PruneResult", "prune_model", "capture_block_inputs",
    "AllocationEvent", "BlockRecord", "ModuleRecord", "StageEvent", "Pattern", "parse_pattern",
]
