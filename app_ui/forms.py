"""Form fields that say what is wrong: a number outside its range gets a message naming the range,
and the form's button stays disabled, instead of a silently red field whose old value a run uses."""

from __future__ import annotations

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


OTHER_SOURCE = "another source (type it)"


def calibration_source(container, current: str, key: str = "calib") -> str | object:
    """The calibration source: a builtin corpus or saved set from a list, or any other spec typed in and
    checked as it is typed (data.documents.check_source, and a shared app's file confinement), before any
    job starts. The spec, or INVALID with the reason under the field."""
    from app_ui.cache import access_policy
    from calib_core.data import sets
    from calib_core.data.documents import check_source
    from calib_core.data.sources import BUILTIN_SOURCES
    from calib_core.errors import CalibLabError

    listed = list(BUILTIN_SOURCES) + [f"set:{name}" for name in sets.list_sets()]
    options = listed + [OTHER_SOURCE]
    picked = container.selectbox("Calibration source", options,
                                 options.index(current) if current in listed else len(listed), key=f"{key}-pick",
                                 help="A builtin corpus, a saved set, or another source: file:PATH, tokens:PATH, "
                                      "hf:NAME[:CONFIG[:SPLIT]] or mix:SOURCE=WEIGHT,SOURCE=WEIGHT[,random=FRACTION]")
    if picked != OTHER_SOURCE:
        return picked
    typed = container.text_input("Source spec", "" if current in listed else current, key=f"{key}-typed",
                                 placeholder="file:PATH, hf:NAME, mix:builtin:wiki=1,builtin:code=1, ...").strip()
    try:
        return check_source(access_policy().source(typed))
    except CalibLabError as exc:
        container.error(str(exc) if typed else "Type a source spec, or pick one from the list.")
        return INVALID


def preview(container, label: str, text: str, height: int) -> None:
    """A text to read (not to edit): wrapped, in a scrolling box of `height` pixels, in full contrast."""
    container.caption(label)
    container.code(text, language=None, wrap_lines=True, height=height)


def whole_numbers(label: str, text: str) -> list[int]:
    """The whole numbers of a comma-separated field, or a ValueError that names the entry and the field."""
    numbers = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if not entry.isdigit() or int(entry) < 1:
            raise ValueError(f"{label}: '{entry}' is not a whole number of 1 or more; write e.g. 8, 32, 128.")
        numbers.append(int(entry))
    if not numbers:
        raise ValueError(f"{label}: give at least one number, e.g. 8.")
    return numbers
