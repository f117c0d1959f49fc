"""Every calibration strategy by name, in the order pickers and help list them. Adding a strategy is one file
in this package (its selection and its STRATEGY entry) and one line here."""

from __future__ import annotations

from . import activation_kmeans, icl_format, least_ppl, random_draw, self_calibration, unique_tokens
from .base import Strategy

STRATEGIES: dict[str, Strategy] = {s.STRATEGY.name: s.STRATEGY for s in (
    random_draw, least_ppl, unique_tokens, activation_kmeans, self_calibration, icl_format)}
