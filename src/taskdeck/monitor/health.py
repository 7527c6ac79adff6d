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


def recorder_health(name: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """One recorder's health by ``name``; with no name, the deployment's: every recorder's together.

    A deployment may run recorders under several names (``taskdeck monitor
    --name``, one per host): it records while any of them runs; its lag is the
    largest of those running, its events the sum. ``recorders`` has each one's.
    """
    now = now or timezone.now()
    states = list(RecorderState.objects.filter(**({"name": name} if name is not None else {})))
    each = {state.name: _one_recorder(state, now) for state in states}
    if not each:
        return {
            "ok": False,
            "running": False,
            "lag": None,
            "heartbeat_age": None,
            "events": 0,
            "recorders": {},
        }
    if name is not None:
        return {**each[name], "recorders": each}
    running = [h for h in each.values() if h["running"]] or list(each.values())
    newest = min(
        running, key=lambda h: h["heartbeat_age"] if h["heartbeat_age"] is not None else float("inf")
    )
    lags = [h["lag"] for h in running if h["lag"] is not None]
    last = [h["last_event_at"] for h in each.values() if h.get("last_event_at")]
    return {
        "ok": any(h["ok"] for h in each.values()),
        "running": any(h["running"] for h in each.values()),
        "lag": max(lags) if lags else None,
        "heartbeat_age": newest["heartbeat_age"],
        "events": sum(h["events"] for h in each.values()),
        "reconstructed": sum(h.get("reconstructed", 0) for h in each.values()),
        "last_event_at": max(last) if last else None,
        "backlog": max((h["backlog"] for h in running if h.get("backlog") is not None), default=None),
        "recorders": each,
    }


def _one_recorder(state: RecorderState, now: dt.datetime) -> dict[str, Any]:
    stale_after = conf.monitor()["RECORDER_STALE_AFTER"]
    if state.heartbeat_at is None:
        return {"ok": False, "running": False, "lag": None, "heartbeat_age": None, "events": state.events}
    age = (now - state.heartbeat_at).total_seconds()
    return {
        "ok": age <= stale_after and state.lag <= stale_after,
        "running": age <= stale_after,
        "lag": state.lag,
        "heartbeat_age": age,
        "events": state.events,
        "reconstructed": state.reconciled,
        "last_event_at": state.last_event_at,
        "backlog": state.backlog,
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
