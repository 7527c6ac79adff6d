"""Health and window stats, shared by the API, /metrics and the terminal view."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone

from taskdeck import conf
from taskdeck.models import RecorderState, Worker
from taskdeck.monitor import series
from taskdeck.policy.scope import Scope


def broker_health(app: Any) -> dict[str, Any]:
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "url": app.conf.broker_url and _redact(app.conf.broker_url)}
    except Exception as exc:  # any failure to connect is "not ok", with the reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _redact(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def database_health() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except DatabaseError as exc:
        return {"ok": False, "error": str(exc)}


def recorder_health(name: str = "default", now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    state = RecorderState.objects.filter(name=name).first()
    stale_after = conf.monitor()["RECORDER_STALE_AFTER"]
    if state is None or state.heartbeat_at is None:
        return {"ok": False, "running": False, "lag": None, "heartbeat_age": None, "events": 0}
    age = (now - state.heartbeat_at).total_seconds()
    return {
        "ok": age <= stale_after and state.lag <= stale_after,
        "running": age <= stale_after,
        "lag": state.lag,
        "heartbeat_age": age,
        "events": state.events,
        "reconstructed": state.reconciled,
        "last_event_at": state.last_event_at,
    }


def workers_health() -> dict[str, Any]:
    online = Worker.objects.online().count()
    return {"ok": online > 0, "online": online, "offline": Worker.objects.filter(online=False).count()}


def health(app: Any) -> dict[str, Any]:
    parts = {
        "broker": broker_health(app),
        "database": database_health(),
        "recorder": recorder_health(),
        "workers": workers_health(),
    }
    return {"ok": all(part["ok"] for part in parts.values()), **parts}


def window_stats(
    window: int, name: str | None = None, queue: str | None = None, scope: Scope | None = None
) -> dict[str, Any]:
    """Throughput, failure rate and percentiles of runs finished in the last ``window`` seconds.

    Read as the charts read them (:func:`taskdeck.monitor.series.window_stats`):
    the window in the chart's steps (1 h in minutes, 24 h in quarter hours,
    7 d in hours), rounded out to whole steps, each step from the coarsest
    rollup table that fits it, settled steps from the cache. ``series`` is
    those steps. With ``scope``, only its task names and queues are counted.
    """
    data = series.window_stats(window, name=name, queue=queue, scope=scope)
    return {
        **data["summary"],
        "window": window,
        "window_name": data["window_name"],
        "step": data["step"],
        "since": data["since"],
        "until": data["until"],
        "series": data["points"],
    }
