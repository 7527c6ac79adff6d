"""Mergeable latency histograms: sparse log-scale buckets and Prometheus ``le`` buckets.

A log bucket ``i`` holds values in ``(MIN * GAMMA**(i-1), MIN * GAMMA**i]``,
so any percentile read back is within ``GAMMA - 1`` (8%) of the true value,
and minutes add up by summing counts.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence

MIN = 1e-4  # 0.1 ms; anything faster lands in bucket 0
GAMMA = 1.08
_LOG_GAMMA = math.log(GAMMA)


def bucket(value: float) -> str:
    """The log bucket of ``value`` seconds, as a JSON-object key."""
    if value <= MIN:
        return "0"
    return str(math.ceil(math.log(value / MIN) / _LOG_GAMMA))


def bucket_value(key: str | int) -> float:
    """A representative value of a log bucket (its geometric middle)."""
    index = int(key)
    return MIN if index == 0 else MIN * GAMMA ** (index - 0.5)


def add(hist: dict[str, int], key: str, count: int = 1) -> None:
    hist[key] = hist.get(key, 0) + count
    if hist[key] <= 0:
        del hist[key]


def merge(hists: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for hist in hists:
        for key, count in hist.items():
            total[key] = total.get(key, 0) + count
    return total


def percentiles(hist: Mapping[str, int], qs: Sequence[float]) -> dict[float, float | None]:
    """``{q: value}`` for each quantile ``q`` in ``qs`` (0..1); None when empty."""
    n = sum(hist.values())
    if n == 0:
        return dict.fromkeys(qs)
    # One walk up the buckets for every quantile, lowest rank first (a chart asks 338 of these).
    ranks = sorted((max(1, math.ceil(q * n)), q) for q in qs)
    out: dict[float, float | None] = {}
    seen, i = 0, 0
    for key in sorted(hist, key=int):
        seen += hist[key]
        while i < len(ranks) and seen >= ranks[i][0]:
            out[ranks[i][1]] = bucket_value(key)
            i += 1
        if i == len(ranks):
            break
    return {q: out.get(q) for q in qs}


def le_index(value: float, bounds: Sequence[float]) -> int:
    """Index of the first Prometheus bucket ``le >= value`` (len(bounds) means +Inf)."""
    return bisect_left(list(bounds), value)
