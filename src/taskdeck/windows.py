"""Names of time windows, one spelling everywhere a count over a window is shown.

The dashboard's window choices (``?window=1h``, ``?since=15m``), the
terminal views' summaries and the API's ``window_name`` all come from here,
so "last 5m" in ``taskdeck status`` and "last 5m" on a page mean the same span.
"""

from __future__ import annotations

_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def window_label(seconds: int) -> str:
    """The short label of a window: ``"15m"``, ``"1h"``, ``"24h"``, ``"7d"``, ``"90s"``.

    Days only from two days up (a day is read as "24h"), otherwise the
    largest unit that divides the window exactly.
    """
    seconds = int(seconds)
    for unit, size in _UNITS:
        if seconds % size == 0 and seconds // size >= (2 if unit == "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def window_name(seconds: int) -> str:
    """What a count over the window is labelled with: ``"last 5m"``."""
    return f"last {window_label(seconds)}"


def windows(*seconds: int) -> dict[str, int]:
    """A choice of windows for a page: label -> seconds, in the order given."""
    return {window_label(s): s for s in seconds}
