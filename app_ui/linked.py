"""Choices kept in the page's address (?name=value): a widget whose options change (a background run
finished and added one) starts again from its default, so these widgets read their value from the
address, which survives reruns, reloads and server restarts, and makes the view shareable."""

from __future__ import annotations

import json

import streamlit as st


def _by_text(options: list) -> dict:
    return {str(option): option for option in options}


def linked_choice(container, label: str, options: list, param: str, default_index: int = 0, **kwargs):
    """A selectbox on `options` whose choice is ?param=; a value the address names that is not an option
    (a deleted run) falls back to `default_index`."""
    wanted = _by_text(options).get(st.query_params.get(param))
    index = options.index(wanted) if wanted is not None else min(default_index, len(options) - 1)
    chosen = container.selectbox(label, options, index=index, **kwargs)
    st.query_params[param] = str(chosen)
    return chosen


def linked_choices(container, label: str, options: list, param: str, default: list, **kwargs) -> list:
    """A multiselect whose choice is ?param=a,b (absent while it equals `default`, so options added
    later join a default of "all"); values that are no longer options are dropped."""
    raw = st.query_params.get(param)
    known = _by_text(options)
    start = default if raw is None else [known[x] for x in raw.split(",") if x in known]
    chosen = container.multiselect(label, options, start, **kwargs)
    if chosen == default:
        st.query_params.pop(param, None)
    else:
        st.query_params[param] = ",".join(map(str, chosen))
    return chosen


def form_to_address(values: dict, text_keys: set) -> None:
    """A form's settings as the page's address (?name=value; numbers, lists and flags as JSON), so a reload,
    a server restart or a shared link opens the form as it was."""
    for name, value in values.items():
        if value is None or value == "":
            st.query_params.pop(name, None)
        else:
            st.query_params[name] = value if name in text_keys else json.dumps(value, separators=(",", ":"))


def form_from_address(text_keys: set) -> dict:
    """The settings `form_to_address` wrote (a value that is not valid JSON is read as text)."""
    values = {}
    for name in st.query_params:
        raw = st.query_params[name]
        try:
            values[name] = raw if name in text_keys else json.loads(raw)
        except ValueError:
            values[name] = raw
    return values
