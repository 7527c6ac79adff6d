"""The recorder process, for the monitor's tests (workers and services: tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

EVENTS = json.loads((Path(__file__).parent / "data" / "events.json").read_text())


@pytest.fixture
def recorded() -> list[dict[str, Any]]:
    """The recorded real events, written through the recorder's writers."""
    from django.utils import timezone

    from taskdeck.monitor import merge
    from taskdeck.monitor.rollups import Rollups, Totals
    from taskdeck.monitor.runs import RunWriter
    from taskdeck.monitor.workers import Workers

    now = timezone.now().timestamp()
    first, last = min(e["timestamp"] for e in EVENTS), max(e["timestamp"] for e in EVENTS)
    # As if they just happened, all in one minute (so in one rollup row per table and task):
    # when that would straddle a minute boundary, they end just before this minute began.
    end = now if (now - (last - first)) // 60 == now // 60 else now // 60 * 60 - 0.001
    shift = end - last
    events = [{**e, "timestamp": e["timestamp"] + shift} for e in EVENTS]
    changes = RunWriter().apply([f for e in events if (f := merge.fact_from_event(e))])
    for subscriber in (Rollups(), Totals([0.1, 1])):
        subscriber.on_changes(changes)
    Workers().on_events([{"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": now, "freq": 2.0}])
    return events
