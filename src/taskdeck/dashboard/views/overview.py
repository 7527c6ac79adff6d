"""Overview (charts, backlog, workers, recent failures) and the health banner every page loads."""

from __future__ import annotations

from celery import current_app
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from taskdeck.dashboard.access import dashboard_view
from taskdeck.dashboard.views import page
from taskdeck.dashboard.views.fleet import queue_rows
from taskdeck.models import TaskState, Worker
from taskdeck.monitor.health import broker_health, recorder_health
from taskdeck.policy import runs_for, workers_for
from taskdeck.windows import window_name, windows

#: Chart windows offered: label -> seconds.
WINDOWS = windows(3600, 86400, 7 * 86400)


@dashboard_view
def overview(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", "1h")
    if window not in WINDOWS:
        window = "1h"
    queues = [row["sample"] for row in queue_rows(request) if row["sample"]]  # the queue page's order
    workers = workers_for(request, limit=100)
    online = [w for w in workers if w.online]
    context = {
        "window": window,
        "window_seconds": WINDOWS[window],
        "window_name": window_name(WINDOWS[window]),
        "windows": list(WINDOWS),
        "queues": queues,
        "backlog": sum(q.ready for q in queues),
        "unacked": sum(q.unacked or 0 for q in queues),
        "workers": workers,
        "online": len(online),
        "active": sum(w.active for w in online),
        "capacity": sum(w.concurrency or 0 for w in online),
        # Set by the recorder's liveness tick (taskdeck.monitor.liveness).
        "lost": runs_for(request).filter(state=TaskState.LOST).count(),
        "stuck": runs_for(request).filter(state=TaskState.STUCK).count(),
        "failures": runs_for(request)
        .filter(state="FAILURE")
        .defer("traceback", "args", "kwargs", "result")
        .order_by("-id")[:8],
    }
    return page(request, "taskdeck/overview.html", context, {"live": "taskdeck/partials/overview_live.html"})


@dashboard_view
def status(request: HttpRequest) -> HttpResponse:
    """The banner: broker or recorder down, recorder behind, no worker online, a process crash-looping."""
    from taskdeck import conf, supervision

    broker = broker_health(current_app)
    recorder = recorder_health()
    workers_online = Worker.objects.online().count()
    failing = supervision.failing(conf.get()["DATA_DIR"])
    return render(
        request,
        "taskdeck/partials/status.html",
        {
            "broker": broker,
            "recorder": recorder,
            "workers_online": workers_online,
            "processes_failing": failing,
        },
    )
