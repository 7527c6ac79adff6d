"""Django's priority (-100..100, higher first) onto taskdeck's lanes.

A Django priority picks a lane (``TASKDECK["LANES"]``), and the lane gives
the queue and the broker's own priority number (:mod:`taskdeck.lanes`: 0 is
the top on Redis, 9 on RabbitMQ). So a priority-100 task is sent exactly as
``in_lane(..., "high")`` sends a Celery task, and overtakes a low backlog on
a worker shared by the lanes for the same reasons (docs/lanes.md).

The thresholds are ``TASKS[alias]["OPTIONS"]["PRIORITY_LANES"]``: a mapping
of lane name to the lowest Django priority it takes, e.g. ``{"high": 50,
"medium": -50, "low": -100}``. A task goes to the first lane, highest first,
whose threshold its priority reaches. Without the option the range is cut
into equal parts, one per lane: with the notes' three lanes ``high`` from 34,
``medium`` from -33, ``low`` below that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskdeck.errors import ConfigurationError

MIN_PRIORITY = -100
MAX_PRIORITY = 100


def default_thresholds(lanes: list[str]) -> dict[str, int]:
    """Equal parts of -100..100, one per lane, highest first; the last lane takes everything left."""
    span = MAX_PRIORITY - MIN_PRIORITY + 1
    out = {}
    for rank, lane in enumerate(lanes):
        out[lane] = MAX_PRIORITY + 1 - round(span * (rank + 1) / len(lanes))
    if lanes:
        out[lanes[-1]] = MIN_PRIORITY
    return out


def thresholds(option: Mapping[str, Any] | None, lanes: list[str]) -> dict[str, int]:
    """The effective thresholds, in lane order (highest lane first); raises on a bad option."""
    if option is None:
        return default_thresholds(lanes)
    if not isinstance(option, Mapping):
        raise ConfigurationError(
            f"TASKS OPTIONS['PRIORITY_LANES'] must map lane names to the lowest priority each takes, "
            f"got {type(option).__name__}"
        )
    unknown = [name for name in option if name not in lanes]
    if unknown:
        raise ConfigurationError(
            f"TASKS OPTIONS['PRIORITY_LANES'] names lanes {', '.join(map(repr, unknown))} that "
            f"TASKDECK['LANES'] does not define ({', '.join(lanes)})"
        )
    out: dict[str, int] = {}
    for lane in lanes:
        if lane not in option:
            continue
        value = option[lane]
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
            raise ConfigurationError(
                f"TASKS OPTIONS['PRIORITY_LANES'][{lane!r}] must be a whole number from "
                f"{MIN_PRIORITY} to {MAX_PRIORITY}, got {value!r}"
            )
        out[lane] = value
    values = list(out.values())
    if values != sorted(values, reverse=True):
        raise ConfigurationError(
            "TASKS OPTIONS['PRIORITY_LANES'] thresholds must fall from the highest lane to the lowest "
            f"(TASKDECK['LANES'] order), got {out}"
        )
    if not values or values[-1] != MIN_PRIORITY:
        raise ConfigurationError(
            f"TASKS OPTIONS['PRIORITY_LANES'] leaves priorities below {min(values, default=0)} without "
            f"a lane: give the lowest lane {MIN_PRIORITY}"
        )
    return out


def lane_for(priority: int, table: Mapping[str, int]) -> str:
    """The lane of a Django ``priority`` under ``table`` (from :func:`thresholds`)."""
    for lane, lowest in table.items():
        if priority >= lowest:
            return lane
    raise ConfigurationError(f"no lane takes priority {priority} (thresholds {dict(table)})")
