"""Queues (depth, priority sub-queues, oldest message, consumers), workers, and the audit log."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.core.cache import caches
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from taskdeck import conf
from taskdeck.dashboard.access import dashboard_view
from taskdeck.dashboard.actions import RESIZABLE_POOLS
from taskdeck.dashboard.views import page
from taskdeck.models import AuditEntry, QueueSample, Worker
from taskdeck.monitor.queues import configured_queues, without_consumer
from taskdeck.policy import audit_for, scope_of, workers_for
from taskdeck.querysets import WORKERS_SHOWN


def queue_rows(request: HttpRequest) -> list[dict[str, Any]]:
    """Every declared queue with its newest sample (None before the first one), and sampled queues beyond.

    Only the queues in the request's scope. A queue beyond the declared ones is
    one the sampler found holding messages (a route to a queue nothing
    declares): marked ``declared: False``.
    """
    scope = scope_of(request)
    samples = {s.queue: s for s in QueueSample.objects.latest_per_queue() if scope.allows_queue(s.queue)}
    configured = configured_queues(current_app, conf.monitor()["QUEUES"])()
    declared = [q for q in configured if scope.allows_queue(q)]
    names = list(dict.fromkeys([*declared, *samples]))
    return [
        {
            "name": name,
            "sample": samples.get(name),
            "declared": name in configured,
            "without_consumer": without_consumer(samples.get(name)),
        }
        for name in names
    ]


def consumers(wait: bool = True) -> dict[str, list[str]] | None:
    """Queue -> hostnames of the workers consuming it, asked of the workers (cached 30 s).

    Redis cannot count a queue's consumers (RabbitMQ's are in the samples too),
    so the workers are asked with ``inspect active_queues``, which waits up to
    ``CONTROL_TIMEOUT`` for replies. With ``wait=False`` only a cached answer
    is returned. None: not known (nothing cached, the broker down).
    """
    settings = conf.dashboard()
    cache = caches[settings["CACHE"]]
    key = "taskdeck:dashboard:consumers"
    found = cache.get(key)
    if found is not None or not wait:
        return found
    try:
        replies = current_app.control.inspect(timeout=settings["CONTROL_TIMEOUT"]).active_queues() or {}
    except Exception:  # the broker is down: the banner says so
        return None
    out: dict[str, list[str]] = {}
    for hostname, queues in sorted(replies.items()):
        for queue in queues or []:
            out.setdefault(queue.get("name", "?"), []).append(hostname)
    cache.set(key, out, 30)
    return out


@dashboard_view
def queues(request: HttpRequest) -> HttpResponse:
    # The first render does not wait for the workers: its rows ask again at once.
    context = {
        "rows": queue_rows(request),
        "consumers": consumers(wait=request.GET.get("fragment") == "live"),
    }
    return page(request, "taskdeck/queues.html", context, {"live": "taskdeck/partials/queue_rows.html"})


@dashboard_view
def purge_confirm(request: HttpRequest, name: str) -> HttpResponse:
    rows = {row["name"]: row for row in queue_rows(request)}
    if name not in rows:
        raise Http404(f"no queue {name!r}")
    return page(request, "taskdeck/confirm_purge.html", {"row": rows[name]})


@dashboard_view
def workers(request: HttpRequest) -> HttpResponse:
    rows = workers_for(request)
    total = Worker.objects.count() if len(rows) >= WORKERS_SHOWN else len(rows)
    context = {"workers": rows, "total": total, "resizable": RESIZABLE_POOLS}
    return page(request, "taskdeck/workers.html", context, {"live": "taskdeck/partials/worker_rows.html"})


@dashboard_view
def shutdown_confirm(request: HttpRequest, hostname: str) -> HttpResponse:
    if scope_of(request).limited:  # it names the queues the worker serves; only the unlimited may act
        raise Http404("worker control needs access to every queue")
    worker = get_object_or_404(Worker, hostname=hostname)
    serving = consumers() or {}
    mine = sorted(q for q, hosts in serving.items() if hostname in hosts)
    alone = [q for q in mine if serving.get(q) == [hostname]]
    return page(request, "taskdeck/confirm_shutdown.html", {"worker": worker, "queues": mine, "alone": alone})


@dashboard_view
def audit(request: HttpRequest) -> HttpResponse:
    entries = audit_for(request).order_by("-at")
    action = request.GET.get("action", "")
    if action in AuditEntry.Action.values:
        entries = entries.filter(action=action)
    context = {"entries": entries[:200], "actions": AuditEntry.Action.choices, "action": action}
    return page(request, "taskdeck/audit.html", context)
