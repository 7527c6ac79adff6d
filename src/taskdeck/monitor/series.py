"""Charts' data: finished runs per time bucket, with latency percentiles, from the rollups.

A window is cut into buckets of a fixed step (1 h into minutes, 24 h into
quarter hours, 7 d into hours: always 60–170 points). Each bucket adds up the
rows of the coarsest rollup table whose period divides the step (minutes for
steps of 1 and 5 minutes, quarter hours for 15 minutes, hours from 1 hour
up): counts by final state, retries, and the merged runtime and wait
histograms, from which the percentiles come. A chart of every task (no
name or queue asked, no scope) reads that period's table of every task
instead: one row per period. The recorder writes every table from the same
runs, so the table read changes how many rows are added up (a 7-day chart
at a million runs: 168 rows of every task, or ~2k hourly rows per task name
and queue, instead of ~100k minutes), never the sums.

A bucket that ended more than ``SERIES_SETTLE`` seconds ago hardly changes
any more (only a late reconciliation can touch it), so its sums are kept in
Django's cache (``SERIES_CACHE``) for ``SERIES_CACHE_TTL`` seconds: a chart
refresh reads the open buckets from the rollups and the rest from the cache.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

from django.core.cache import caches
from django.db.models import Q
from django.utils import timezone

from taskdeck import conf
from taskdeck.models import ALL_TASKS, ROLLUPS, Rollup
from taskdeck.monitor import histogram
from taskdeck.policy.scope import Scope, rollups_q
from taskdeck.windows import window_name

#: (longest window, step) in seconds: the first step whose window covers the request is used.
STEPS = ((3600, 60), (6 * 3600, 300), (86400, 900), (7 * 86400, 3600), (30 * 86400, 4 * 3600))
#: Buckets per cache entry.
CHUNK = 24
COUNTS = ("succeeded", "failed", "revoked", "rejected", "retried")
QS = (0.5, 0.95, 0.99)


def table_for(step: int) -> type[Rollup]:
    """The coarsest rollup table whose period divides ``step``: each of its rows lies in one bucket."""
    return max((model for model in ROLLUPS if step % model.period == 0), key=lambda model: model.period)


def step_for(window: int) -> int:
    for longest, step in STEPS:
        if window <= longest:
            return step
    return 86400


def rollup_table(window: int) -> type[Rollup]:
    """The rollup table a count over the last ``window`` seconds reads: the one its chart reads."""
    return table_for(step_for(window))


def window_series(
    window: int,
    name: str | None = None,
    queue: str | None = None,
    now: dt.datetime | None = None,
    scope: Scope | None = None,
) -> dict[str, Any]:
    """Buckets of the last ``window`` seconds (the newest one still open) and the window's totals.

    ``ceil(window / step)`` buckets, the newest one open: what a chart draws. With
    ``scope``, only its task names and queues are counted (cached apart per scope).
    """
    now = now or timezone.now()
    step = step_for(window)
    end = math.ceil(now.timestamp() / step) * step
    return _series(window, step, end - math.ceil(window / step) * step, now, name, queue, scope)


def window_stats(
    window: int,
    name: str | None = None,
    queue: str | None = None,
    now: dt.datetime | None = None,
    scope: Scope | None = None,
) -> dict[str, Any]:
    """The totals of every run finished in the last ``window`` seconds, and the chart's buckets.

    As :func:`window_series`, with the window rounded out to whole steps (the
    bucket holding ``now - window`` is the first), so no run of the window is
    left out; ``since`` says where the count starts.
    """
    now = now or timezone.now()
    step = step_for(window)
    first = math.floor((now.timestamp() - window) / step) * step
    return _series(window, step, first, now, name, queue, scope)


def _series(
    window: int,
    step: int,
    first: int,
    now: dt.datetime,
    name: str | None,
    queue: str | None,
    scope: Scope | None,
) -> dict[str, Any]:
    settings = conf.monitor()
    end = math.ceil(now.timestamp() / step) * step
    starts = list(range(first, max(end, first + step), step))
    settled = now.timestamp() - settings["SERIES_SETTLE"]
    buckets = _cached_buckets(starts, step, settled, name, queue, settings, scope or Scope.everything())
    points = []
    total: dict[str, Any] = {**dict.fromkeys(COUNTS, 0), "runtime": {}, "wait": {}}
    for start in starts:
        bucket = buckets[start]
        for count in COUNTS:
            total[count] += bucket[count]
        for kind in ("runtime", "wait"):
            acc = total[kind]
            for key, value in bucket[kind].items():
                acc[key] = acc.get(key, 0) + value
        points.append(
            {"t": dt.datetime.fromtimestamp(start, dt.UTC), **{c: bucket[c] for c in COUNTS}, **bucket["p"]}
        )
    finished = sum(total[c] for c in ("succeeded", "failed", "revoked", "rejected"))
    span = max(now.timestamp() - starts[0], 1.0)
    return {
        "window": window,
        "window_name": window_name(window),
        "step": step,
        "since": dt.datetime.fromtimestamp(starts[0], dt.UTC),
        "until": now,
        "summary": {
            **{count: total[count] for count in COUNTS},
            "finished": finished,
            "throughput": finished / span,
            "failure_rate": total["failed"] / finished if finished else 0.0,
            "runtime": _percentiles(total["runtime"]),
            "wait": _percentiles(total["wait"]),
        },
        "points": points,
    }


def _cached_buckets(
    starts: list[int],
    step: int,
    settled: float,
    name: str | None,
    queue: str | None,
    settings: dict[str, Any],
    scope: Scope,
) -> dict[int, dict[str, Any]]:
    """Every bucket of ``starts``: settled ones from the cache where present, the rest from the rollups.

    Settled buckets are cached in chunks of ``CHUNK`` aligned buckets (a handful
    of cache entries per window, whatever the cache's entry limit), each chunk
    a dict of the buckets of it settled so far.
    """
    cache = caches[settings["SERIES_CACHE"]]
    filters = hashlib.sha1(f"{name or ''}\0{queue or ''}".encode()).hexdigest()[:16]
    span = step * CHUNK

    def key(chunk: int) -> str:
        return f"taskdeck:series:3:{step}:{chunk}:{filters}:{scope.key()}"

    chunks = sorted({start - start % span for start in starts})
    found = cache.get_many([key(c) for c in chunks])
    wanted = set(starts)
    buckets: dict[int, dict[str, Any]] = {}
    for entry in found.values():
        buckets.update((start, bucket) for start, bucket in entry.items() if start in wanted)
    missing = [start for start in starts if start not in buckets]
    model = table_for(step)
    limit = None
    if not (name or queue or scope.limited):
        model = ALL_TASKS[model]
    elif missing:
        limit = rollups_q(scope)
    for lo, hi in _ranges(missing, step):
        buckets.update(_read(model, lo, hi, step, name, queue, limit))
    changed: dict[str, dict[int, dict[str, Any]]] = {}
    for start in missing:
        if start + step <= settled:
            chunk = start - start % span
            entry = changed.setdefault(key(chunk), dict(found.get(key(chunk)) or {}))
            entry[start] = buckets[start]
    if changed:
        cache.set_many(changed, settings["SERIES_CACHE_TTL"])
    return buckets


def _percentiles(hist: dict[str, int]) -> dict[str, float | None]:
    return {f"p{int(q * 100)}": v for q, v in histogram.percentiles(hist, QS).items()}


def _ranges(starts: list[int], step: int) -> list[tuple[int, int]]:
    """Runs of consecutive bucket starts as (first start, end) pairs: one query each."""
    out: list[tuple[int, int]] = []
    for start in starts:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + step)
        else:
            out.append((start, start + step))
    return out


def _empty() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTS, 0), "runtime": {}, "wait": {}}


def _read(
    model: type[Rollup],
    lo: int,
    hi: int,
    step: int,
    name: str | None,
    queue: str | None,
    limit: Q | None = None,
) -> dict[int, dict[str, Any]]:
    """Sums of ``model``'s rows of the buckets in [lo, hi), every bucket present (empty ones too)."""
    out = {start: _empty() for start in range(lo, hi, step)}
    rows = (
        model.objects.window(
            dt.datetime.fromtimestamp(lo, dt.UTC),
            dt.datetime.fromtimestamp(hi, dt.UTC),
            name=name,
            queue=queue,
        )
        .filter(limit or Q())
        .values_list(model.period_field, *COUNTS, "runtime_hist", "wait_hist")
    )
    for period, *counts, runtime, wait in rows.iterator(chunk_size=5000):
        start = lo + int((period.timestamp() - lo) // step) * step
        bucket = out[start]
        for count, value in zip(COUNTS, counts, strict=True):
            bucket[count] += value
        for kind, hist in (("runtime", runtime), ("wait", wait)):
            acc = bucket[kind]
            if not acc:  # the bucket's first row (its only one in a table of every task)
                bucket[kind] = dict(hist or {})
                continue
            for key, value in (hist or {}).items():
                acc[key] = acc.get(key, 0) + value
    for bucket in out.values():
        # Computed once here, kept in the cache with the sums.
        runtime = histogram.percentiles(bucket["runtime"], (0.5, 0.95))
        wait = histogram.percentiles(bucket["wait"], (0.5, 0.95))
        bucket["p"] = {
            "runtime_p50": runtime[0.5],
            "runtime_p95": runtime[0.95],
            "wait_p50": wait[0.5],
            "wait_p95": wait[0.95],
        }
    return out
