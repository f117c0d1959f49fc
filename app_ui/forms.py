"""Form fields that say what is wrong: a number outside its range gets a message naming the range,
and the form's button stays disabled, instead of a silently red field whose old value a run uses."""

from __future__ import annotations

import streamlit as st

INVALID = object()  # what a field returns when its content cannot be used


def bounded_number(column, label: str, low, high, value, optional: bool = False, **kwargs):
    """A number input with bounds checked by us: its value; INVALID (with an error shown under the
    field) when out of [low, high], or empty unless `optional` (then None)."""
    entered = column.number_input(label, value=value, **kwargs)
    if entered is None:
        if optional:
            return None
        column.error(f"{label}: enter a number from {low} to {high}.")
        return INVALID
    if not low <= entered <= high:
        column.error(f"{label} must be from {low} to {high}; {entered:g} is outside.")
        return INVALID
    return entered


def any_invalid(*values) -> bool:
    return any(v is INVALID for v in values)
