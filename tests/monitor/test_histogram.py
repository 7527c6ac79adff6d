"""Percentiles read from a log histogram: the bucket where the quantile's rank falls, in any order."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from taskdeck.monitor import histogram


def by_sorting_every_value(hist: dict[str, int], q: float) -> float:
    """The ``ceil(q * n)``-th smallest value (at least the first), each run as its bucket's value."""
    values = sorted(histogram.bucket_value(key) for key, count in hist.items() for _ in range(count))
    return values[max(1, math.ceil(q * len(values))) - 1]


@given(
    st.dictionaries(st.integers(0, 250).map(str), st.integers(1, 40), max_size=30),
    st.lists(st.sampled_from([0.0, 0.01, 0.5, 0.95, 0.99, 1.0]), min_size=1, max_size=4),
)
def test_each_quantile_is_the_value_at_its_rank(hist, qs):
    got = histogram.percentiles(hist, qs)
    assert list(got) == list(dict.fromkeys(qs))
    for q in qs:
        assert got[q] == (by_sorting_every_value(hist, q) if hist else None)


def test_buckets_are_ordered_as_numbers_not_as_text():
    hist = {"9": 1, "10": 1, "100": 1}
    assert histogram.percentiles(hist, (0.5, 1.0)) == {
        0.5: histogram.bucket_value("10"),
        1.0: histogram.bucket_value("100"),
    }
