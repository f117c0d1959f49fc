"""The calibration-strategy picker shared by the Calibration data page and the Prune form: a strategy
from the registry (data/strategies.py) and its settings, remembered in the Prune form's settings."""

from __future__ import annotations

import streamlit as st

from app_ui.forms import INVALID, bounded_number
from calib_core.data.strategies import STRATEGIES, non_default


def strategy_inputs(container, key: str, explain: bool = False) -> tuple[str, dict | object]:
    """The chosen strategy and its non-default settings (INVALID when a number is out of range), starting
    from the Prune form's last values, which this updates."""
    form = st.session_state.setdefault("prune_form", {})
    names = list(STRATEGIES)
    current = form.get("strategy", "random")
    name = container.selectbox("Calibration strategy", names, names.index(current) if current in names else 0,
                               key=f"{key}-strategy", format_func=lambda n: f"{n}: {STRATEGIES[n].summary}",
                               help="How the nsamples windows are chosen from the calibration source.")
    strategy = STRATEGIES[name]
    if explain:
        container.caption(strategy.explain)
    saved = form.get("strategy_options", {}) if current == name else {}
    chosen, invalid = {}, False
    if strategy.settings:
        columns = container.columns(min(4, len(strategy.settings)))
        for index, setting in enumerate(strategy.settings):
            column = columns[index % len(columns)]
            label = setting.name.replace("_", " ")
            value = saved.get(setting.name, setting.default)
            if setting.choices:
                chosen[setting.name] = column.selectbox(label, list(setting.choices), list(setting.choices).index(value),
                                                        key=f"{key}-{setting.name}", help=setting.help)
                continue
            whole = isinstance(setting.default, int)
            entered = bounded_number(column, label, int(setting.low) if whole else setting.low,
                                     int(setting.high) if whole else setting.high, value, key=f"{key}-{setting.name}",
                                     help=setting.help, **({"step": 1} if whole else {"format": "%.2f"}))
            if entered is INVALID:
                invalid = True
            else:
                chosen[setting.name] = int(entered) if whole else float(entered)
    if invalid:
        return name, INVALID
    options = non_default(name, chosen)
    form.update(strategy=name, strategy_options=options)
    return name, options
