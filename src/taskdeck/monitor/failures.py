"""The failures page's groups: failed runs of a window by task name and exception class.

Grouping a week of failures reads every failed run's row for its exception
text (~21k rows scattered over the run table at a million runs). A failed
run's group no longer changes once its hour has settled (``SERIES_SETTLE``,
as for the charts: only a late reconciliation can add to it), so each
settled hour's groups are kept in the charts' cache (``SERIES_CACHE``, for
``SERIES_CACHE_TTL`` seconds) and a refresh of the page reads only the
window's first part-hour and its open last hour from the runs.

A run retried from the dashboard leaves its group: the newest successful
retry's audit id is part of the cache key, so each retry starts the cache afresh.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.core.cache import caches
from django.db.models import Count, Max
from django.db.models.functions import TruncHour
from django.utils import timezone

from taskdeck import conf
from taskdeck.models import AuditEntry, TaskRun

HOUR = 3600
#: Hours per cache entry.
CHUNK = 24
#: The key, in a cache entry of ``CHUNK`` hours, of their groups added up.
ALL = "all"
Key = tuple[str, str]


def failure_groups(
    since: dt.datetime,
    runs: Any = None,
    scope_key: str = "all",
    now: dt.datetime | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Failed runs finished since ``since`` (not retried) by task name and exception class, latest first.

    Each group: ``name``, ``exc_type``, ``count``, ``last_id`` (its newest run) and ``last_at``
    (its latest finish).
    """
    settings = conf.monitor()
    now = now or timezone.now()
    retries = AuditEntry.objects.filter(action=AuditEntry.Action.RETRY, ok=True)
    runs = (TaskRun.objects.all() if runs is None else runs).exclude(task_id__in=retries.values("target"))
    first = math.ceil(since.timestamp() / HOUR) * HOUR
    last = math.floor((now.timestamp() - settings["SERIES_SETTLE"]) / HOUR) * HOUR
    if last - first < HOUR:  # no settled hour in the window: one query
        return _top(_read(runs, since, None), limit)
    version = f"{scope_key}:{retries.aggregate(Max('id'))['id__max'] or 0}"
    settled = _settled_hours(runs, first, last, version, settings)
    return _top(_merged([_read(runs, since, _at(first)), *settled, _read(runs, _at(last), None)]), limit)


def _merged(parts: list[dict[Key, dict[str, Any]]]) -> dict[Key, dict[str, Any]]:
    """The groups of ``parts`` added up: counts summed, the newest run and finish kept."""
    total: dict[Key, dict[str, Any]] = {}
    for part in parts:
        for key, group in part.items():
            acc = total.get(key)
            if acc is None:
                total[key] = dict(group)
                continue
            acc["count"] += group["count"]
            acc["last_id"] = max(acc["last_id"], group["last_id"])
            acc["last_at"] = max(acc["last_at"], group["last_at"])
    return total


def _settled_hours(
    runs: Any, first: int, last: int, version: str, settings: dict[str, Any]
) -> list[dict[Key, dict[str, Any]]]:
    """The groups of the hours in [first, last): from the cache, the missing ones read and cached.

    A chunk of ``CHUNK`` hours wholly in the window is one part, its hours added
    up once and kept with them (``ALL``): a week is 7 or 8 parts to add, not 168.
    """
    cache = caches[settings["SERIES_CACHE"]]
    span = HOUR * CHUNK

    def key(chunk: int) -> str:
        return f"taskdeck:failures:1:{version}:{chunk}"

    starts = list(range(first, last, HOUR))
    chunks = sorted({start - start % span for start in starts})
    found = cache.get_many([key(c) for c in chunks])
    hours: dict[int, dict[Key, dict[str, Any]]] = {}
    for entry in found.values():
        hours.update(
            (start, groups) for start, groups in entry.items() if start != ALL and first <= start < last
        )
    missing = [start for start in starts if start not in hours]
    changed: dict[str, dict[Any, Any]] = {}
    if missing:
        lo, hi = missing[0], missing[-1] + HOUR
        read = _read(runs, _at(lo), _at(hi), by_hour=True)
        for start in missing:
            hours[start] = read.get(start, {})
        for start in missing:
            chunk = start - start % span
            entry = changed.setdefault(key(chunk), dict(found.get(key(chunk)) or {}))
            entry[start] = hours[start]
    parts: list[dict[Key, dict[str, Any]]] = []
    for chunk in chunks:
        if first <= chunk and chunk + span <= last:  # every hour of it in the window, settled
            entry = changed.get(key(chunk)) or found.get(key(chunk)) or {}
            if ALL not in entry:
                entry = changed.setdefault(key(chunk), dict(entry))
                entry[ALL] = _merged([hours[start] for start in range(chunk, chunk + span, HOUR)])
            parts.append(entry[ALL])
        else:
            parts.extend(hours[start] for start in starts if chunk <= start < chunk + span)
    if changed:
        cache.set_many(changed, settings["SERIES_CACHE_TTL"])
    return parts


def _read(runs: Any, lo: dt.datetime, hi: dt.datetime | None, by_hour: bool = False) -> Any:
    """Groups of the failed runs finished in [lo, hi); ``by_hour``: ``{hour start: groups}``."""
    failed = runs.filter(state="FAILURE", finished_at__gte=lo)
    if hi is not None:
        failed = failed.filter(finished_at__lt=hi)
    columns = ["name", "exc_type"] + (["hour"] if by_hour else [])
    if by_hour:
        failed = failed.annotate(hour=TruncHour("finished_at", tzinfo=dt.UTC))
    rows = (
        failed.exception_type()
        .values(*columns)
        .annotate(count=Count("id"), last_id=Max("id"), last_at=Max("finished_at"))
        .order_by()
    )
    if not by_hour:
        return {(r["name"], r["exc_type"]): r for r in rows}
    out: dict[int, dict[Key, dict[str, Any]]] = {}
    for r in rows:
        hour = int(r.pop("hour").timestamp())
        out.setdefault(hour, {})[(r["name"], r["exc_type"])] = r
    return out


def _top(groups: dict[Key, dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return sorted(groups.values(), key=lambda g: -g["last_id"])[:limit]


def _at(stamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp, dt.UTC)
