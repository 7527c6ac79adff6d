"""Worker rows from heartbeats, and pool details from ``inspect stats``."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import Q

from taskdeck.models import Worker
from taskdeck.monitor.merge import clip
from taskdeck.monitor.subscribers import Every, Subscriber

logger = logging.getLogger("taskdeck.monitor")

WORKER_EVENTS = {"worker-online": True, "worker-heartbeat": True, "worker-offline": False}


#: Seconds between heartbeats a worker is believed at most (Celery's default is 2): a heartbeat
#: claiming ``freq`` of a year kept a worker that does not exist online for three years.
MAX_HEARTBEAT_INTERVAL = 300.0


class Workers(Subscriber):
    """Online/offline, last heartbeat, active and processed counts, load.

    A heartbeat never moves ``last_heartbeat`` back, so late or duplicated
    events change nothing; a worker that misses ``misses`` heartbeats is
    marked offline on the next tick.
    """

    name = "workers"

    def __init__(self, misses: int = 3, using: str = "default") -> None:
        self.misses = misses
        self.using = using

    def on_events(self, events: list[dict[str, Any]]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for event in events:
            if event.get("type") not in WORKER_EVENTS or not event.get("hostname"):
                continue
            seen = latest.get(event["hostname"])
            if seen is None or _order(event) >= _order(seen):
                latest[event["hostname"]] = event
        if not latest:
            return
        with transaction.atomic(using=self.using):
            rows = {
                w.hostname: w
                for w in Worker.objects.using(self.using)
                .select_for_update()
                .filter(hostname__in=list(latest))
            }
            now = dt.datetime.now(dt.UTC)
            for hostname, event in latest.items():
                # Never later than now: a heartbeat dated in the future (a forged one, year 9999)
                # kept a killed worker online and its runs never LOST, and hid every later event.
                when = min(dt.datetime.fromtimestamp(float(event.get("timestamp") or 0), dt.UTC), now)
                row = rows.get(hostname) or Worker(hostname=hostname)
                if row.last_heartbeat is not None and when < min(row.last_heartbeat, now):
                    continue
                row.online = WORKER_EVENTS[event["type"]]
                row.shut_down = event["type"] == "worker-offline"
                row.last_heartbeat = when
                interval = float(event.get("freq") or row.heartbeat_interval or 2.0)
                row.heartbeat_interval = min(interval, MAX_HEARTBEAT_INTERVAL)
                row.active = int(event.get("active") or 0)
                row.processed = int(event.get("processed") or row.processed or 0)
                row.loadavg = list(event.get("loadavg") or [])
                software = f"{event.get('sw_ident') or ''} {event.get('sw_ver') or ''}".strip()
                row.software = clip(software, Worker._meta.get_field("software").max_length or 128)
                row.save(using=self.using)

    def on_tick(self, now: float) -> None:
        Worker.objects.using(self.using).expire(now, self.misses)


def _order(event: dict[str, Any]) -> tuple[float, int]:
    # worker-offline after a heartbeat with the same timestamp wins.
    return (
        min(float(event.get("timestamp") or 0), time.time()),
        1 if event["type"] == "worker-offline" else 0,
    )


class WorkerInspector(Subscriber):
    """Pool and concurrency of online workers, by ``inspect stats`` every ``interval`` s.

    With ``active_queues`` (``inspect active_queues``), the queues each
    consumes too (:meth:`~taskdeck.querysets.WorkerQuerySet.consumed_queues`).
    A worker seen online whose pool or queues are not known yet (it came up
    since the last round) is asked sooner: every ``NEW_WORKER_INTERVAL`` s
    until it answers.
    """

    name = "inspector"
    NEW_WORKER_INTERVAL = 2.0

    def __init__(
        self,
        inspect: Callable[[], dict[str, Any] | None],
        interval: float,
        using: str = "default",
        active_queues: Callable[[], dict[str, Any] | None] | None = None,
    ):
        self.inspect = inspect
        self.active_queues = active_queues
        self.every = Every(interval)
        self.soon = Every(self.NEW_WORKER_INTERVAL)
        self.using = using

    def _new_worker_online(self) -> bool:
        online = Worker.objects.using(self.using).filter(online=True)
        if self.active_queues is not None:
            return online.filter(Q(pool="") | Q(queues__isnull=True)).exists()
        return online.filter(pool="").exists()

    def on_tick(self, now: float) -> None:
        if not self.every.due(now) and not (self.soon.due(now) and self._new_worker_online()):
            return
        try:
            stats = self.inspect() or {}
        except Exception:  # the broker may be down; the next tick tries again
            logger.warning("inspect stats failed", exc_info=True)
            return
        for hostname, info in stats.items():
            pool = (info.get("pool") if isinstance(info, dict) else None) or {}
            if not isinstance(pool, dict):
                continue  # a reply we cannot read: leave that worker's row as it is
            concurrency = pool.get("max-concurrency")
            if not isinstance(concurrency, int) or not 0 <= concurrency < 2**31:
                concurrency = None
            Worker.objects.using(self.using).filter(hostname=hostname).update(
                # "celery.concurrency.prefork:TaskPool" -> "prefork"
                pool=clip(str(pool.get("implementation", "")).split(":", 1)[0].rsplit(".", 1)[-1], 64),
                concurrency=concurrency,
            )
        if self.active_queues is not None:
            self._read_queues(self.active_queues)

    def _read_queues(self, active_queues: Callable[[], dict[str, Any] | None]) -> None:
        try:
            replies = active_queues() or {}
        except Exception:  # the broker may be down; the next tick tries again
            logger.warning("inspect active_queues failed", exc_info=True)
            return
        for hostname, queues in replies.items():
            if not isinstance(queues, list):
                continue  # a reply we cannot read: leave that worker's row as it is
            names = sorted({clip(q["name"], 255) for q in queues if isinstance(q, dict) and q.get("name")})
            Worker.objects.using(self.using).filter(hostname=hostname).update(queues=names)
