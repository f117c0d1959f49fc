"""random: the seeded draw of data/sources.py, unchanged (the default, and the baseline every other strategy
is compared with)."""

from __future__ import annotations

from .base import RANDOM, Strategy

STRATEGY = Strategy(RANDOM, "seeded random windows of the source (the baseline)",
                    "Windows of the source drawn at random with the run's seed and sampling mode. Every other strategy "
                    "is measured against this one.", False, False, (), None)
