"""Health and window stats, shared by the API, /metrics and the terminal view."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Sum
from django.utils import timezone

from taskdeck import conf
from taskdeck.models import RecorderState, TaskRollup, Worker
from taskdeck.policy.scope import Scope, rollups_q
from taskdeck.windows import window_name


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

    Read from the per-minute rollups: the window is rounded out to whole minutes. With
    ``scope``, only its task names and queues are counted.
    """
    now = timezone.now()
    since = (now - dt.timedelta(seconds=window)).replace(second=0, microsecond=0)
    rows = TaskRollup.objects.window(since, name=name, queue=queue)
    if scope is not None:
        rows = rows.filter(rollups_q(scope))
    stats = rows.stats()
    series = [
        {"minute": r["minute"], "succeeded": r["s"] or 0, "failed": r["f"] or 0}
        for r in rows.values("minute").annotate(s=Sum("succeeded"), f=Sum("failed")).order_by("minute")
    ]
    span = max((now - since).total_seconds(), 1.0)
    return {
        **stats,
        "window": window,
        "window_name": window_name(window),
        "throughput": stats["finished"] / span,
        "series": series,
    }
