"""Task list (filters, search, keyset pages), task detail, workflow graph, failures by exception."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from celery import current_app
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone

from taskdeck import conf, payloads
from taskdeck.dashboard import graph
from taskdeck.dashboard.access import dashboard_view
from taskdeck.dashboard.views import page
from taskdeck.models import AuditEntry, TaskRun, TaskState, Worker
from taskdeck.monitor import attempts
from taskdeck.monitor import failures as failures_
from taskdeck.monitor.merge import FINAL
from taskdeck.policy.scope import (
    audit_for,
    hide_links_outside,
    known_runs,
    names_in_scope,
    runs_for,
    scope_of,
)
from taskdeck.windows import windows

#: "Since" choices of the task list and the failures page: label -> seconds.
SINCE = windows(900, 3600, 86400, 7 * 86400)
#: Columns a workflow graph's nodes and edges read.
GRAPH_FIELDS = ("id", "task_id", "name", "state", "runtime", "parent_id", "root_id", "group_id")
#: Columns the list does not show: not read for a page of 50 rows.
LIST_DEFER = ("traceback", "result", "routing_key", "parent_id", "root_id", "group_id", "payload", "attempts")


def _since(key: str | None) -> dt.datetime | None:
    return timezone.now() - dt.timedelta(seconds=SINCE[key]) if key in SINCE else None


@dashboard_view
def task_list(request: HttpRequest) -> HttpResponse:
    get = request.GET
    states = [s for s in get.getlist("state") if s in TaskState.values]
    filters: dict[str, Any] = {
        "state": ",".join(states) or None,
        "name": get.get("name", "").strip() or None,
        "queue": get.get("queue", "").strip() or None,
        "worker": get.get("worker", "").strip() or None,
        "q": get.get("q", "").strip() or None,
        "since": _since(get.get("since")),
    }
    after = get.get("after", "")
    size = conf.dashboard()["PAGE_SIZE"]
    scope = scope_of(request)
    rows = runs_for(request).search_page(
        _cursor(after),
        size + 1,
        LIST_DEFER,
        keep_name=names_in_scope(request),
        **filters,
    )
    names, queues = known_runs(request)
    context = {
        "rows": rows[:size],
        "next": rows[size - 1].id if len(rows) > size else None,
        "first_page": not after,
        "filtered": any(v for v in filters.values()),
        "states": TaskState.values,
        "selected_states": states,
        "names": [n for n in names if scope.allows_name(n)],
        "queues": sorted(q for q in {*queues, *_configured_queues()} if scope.allows_queue(q)),
        "workers": _worker_choices(get.get("worker", "")),
        "since_choices": list(SINCE),
        "since": get.get("since", ""),
    }
    return page(request, "taskdeck/tasks.html", context, {"rows": "taskdeck/partials/task_rows.html"})


def _worker_choices(selected: str) -> list[str]:
    """The worker filter's choices: the workers lists show (online first), by hostname, and ``selected``."""
    names = set(Worker.objects.shown().values_list("hostname", flat=True))
    if selected:
        names.add(selected)
    return sorted(names)


def _configured_queues() -> list[str]:
    from taskdeck.monitor.sampler import configured_queues

    return configured_queues(current_app, conf.monitor()["QUEUES"])()


@dashboard_view
def task_detail(request: HttpRequest, task_id: str) -> HttpResponse:
    runs = runs_for(request)
    run = runs.filter(task_id=task_id).first()
    if run is None:
        return _not_recorded_yet(request, task_id)
    flow = runs.workflow(run, limit=50)
    hide_links_outside(request, [run, *(r for runs in flow.values() for r in runs)])  # read by workflow()
    history = list(audit_for(request).filter(target=run.task_id).order_by("-at")[:20])
    retries = AuditEntry.objects.filter(action=AuditEntry.Action.RETRY, ok=True)
    retry_of = retries.filter(detail__task_id=run.task_id).first()
    context = {
        "run": run,
        "timeline": timeline(run),
        "flow": flow,
        "flow_size": len(flow["tree"]) + len(flow["group"]),
        "history": history,
        "retried_as": [e.detail.get("task_id") for e in history if e.action == "retry" and e.ok],
        "retry_of": retry_of,
        "final": run.state in FINAL,
        "retry_refused": _retry_refused(run),
        "progress": progress(run) if run.state not in FINAL else None,
        "payload": shown_payload(run),
        "attempts": attempt_rows(run),
    }
    return page(request, "taskdeck/task.html", context, {"live": "taskdeck/partials/task_live.html"})


def _not_recorded_yet(request: HttpRequest, task_id: str) -> HttpResponse:
    """A task the dashboard just sent (a retry) that the recorder has not written yet: wait for it."""
    sent = AuditEntry.objects.filter(action=AuditEntry.Action.RETRY, ok=True, detail__task_id=task_id).first()
    if sent is None or not runs_for(request).filter(task_id=sent.target).exists():
        raise Http404(f"no task {task_id!r} was recorded")
    fragments = {"live": "taskdeck/partials/task_pending.html"}
    return page(request, "taskdeck/task_pending.html", {"task_id": task_id, "sent": sent}, fragments)


def timeline(run: TaskRun) -> list[dict[str, Any]]:
    """sent → (stuck) → received → started → (lost) → finished, each with the time since the step before."""
    out: list[dict[str, Any]] = []
    previous: dt.datetime | None = None
    for step in run.steps():
        at = step["at"]
        after = (at - previous).total_seconds() if at and previous else None
        label = step["state"].lower() or "finished"
        out.append({"label": label, "at": at, "after": after, "detail": step["detail"]})
        previous = at or previous
    return out


def shown_payload(run: TaskRun) -> dict[str, Any] | None:
    """The captured arguments as indented JSON text, with their flags; None when not captured."""
    payload = payloads.shown(run.payload)
    if not payload.captured:
        return None
    return {
        "args": json.dumps(payload.args, indent=2, ensure_ascii=False),
        "kwargs": json.dumps(payload.kwargs, indent=2, ensure_ascii=False),
        "truncated": payload.truncated,
        "redacted": payload.redacted,
    }


def attempt_rows(run: TaskRun) -> list[dict[str, Any]]:
    """The run's attempts, oldest first, with datetimes (none for a run that never started)."""
    rows = attempts.attempts(run.attempts)
    for row in rows:
        for key in ("started_at", "finished_at"):
            row[key] = None if row[key] is None else dt.datetime.fromtimestamp(row[key], dt.UTC)
    return rows


def _retry_refused(run: TaskRun) -> str | None:
    """Why this run cannot be retried with the same arguments, or None."""
    if run.state not in FINAL:
        return "still running: revoke it first"
    return payloads.refusal(run.name, payloads.read(run.payload))


def progress(run: TaskRun) -> dict[str, Any] | None:
    """What a running task reported with ``update_state(state="PROGRESS", meta={"current", "total"})``.

    Read through the Celery app's result backend, as ``AsyncResult.info`` does.
    """
    try:
        result = current_app.AsyncResult(run.task_id)
        state, info = result.state, result.info
    except Exception:  # no result backend, or it is down: no progress bar
        return None
    if state != "PROGRESS" or not isinstance(info, dict):
        return None
    current, total = info.get("current"), info.get("total")
    if not isinstance(current, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    try:  # a task may report anything: 10**400 is an int no float holds
        percent = 100.0 * float(current) / float(total)
    except (OverflowError, ZeroDivisionError):
        return None
    if not math.isfinite(percent):
        return None
    return {
        "current": current,
        "total": total,
        "percent": max(0.0, min(100.0, percent)),
        "message": str(info.get("message") or "")[:200],
    }


@dashboard_view
def workflow(request: HttpRequest, task_id: str) -> HttpResponse:
    run = get_object_or_404(runs_for(request), task_id=task_id)
    # What the graph draws, nothing more: 500 runs of a large group with every column cost ~100 ms.
    runs = runs_for(request).only(*GRAPH_FIELDS).graph(run)
    drawn = graph.build(runs)
    context = {
        "run": run,
        "graph": drawn,
        "paths": drawn.paths(),
        "open": any(r.state not in FINAL for r in runs),
        "counts": _counts(runs),
    }
    fragments = {"graph": "taskdeck/partials/workflow_graph.html"}
    return page(request, "taskdeck/workflow.html", context, fragments)


def _counts(runs: list[TaskRun]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    return sorted(counts.items())


def _failures(request: HttpRequest, since_key: str) -> Any:
    retried = AuditEntry.objects.filter(action=AuditEntry.Action.RETRY, ok=True).values("target")
    return runs_for(request).exclude(task_id__in=retried), _since(since_key)


@dashboard_view
def failures(request: HttpRequest) -> HttpResponse:
    since_key = request.GET.get("since", "24h")
    if since_key not in SINCE:
        since_key = "24h"
    since = timezone.now() - dt.timedelta(seconds=SINCE[since_key])
    groups = failures_.failure_groups(since, runs=runs_for(request), scope_key=scope_of(request).key())
    latest = TaskRun.objects.filter(id__in=[g["last_id"] for g in groups]).only("id", "task_id", "exception")
    samples = {r.id: r for r in latest}
    for g in groups:
        g["sample"] = samples.get(g["last_id"])
    context = {
        "groups": groups,
        "total": sum(g["count"] for g in groups),
        "since": since_key,
        "since_choices": list(SINCE),
        "limit": conf.dashboard()["BULK_RETRY_LIMIT"],
    }
    return page(request, "taskdeck/failures.html", context, {"live": "taskdeck/partials/failure_groups.html"})


def failure_group_runs(
    request: HttpRequest, since_key: str, name: str, exc_type: str, limit: int
) -> list[TaskRun]:
    """The failed runs of one group in the request's scope, newest first, not retried yet.

    A group with runs, none of them in scope, is not found (404).
    """
    if since_key not in SINCE:
        raise Http404("unknown window")
    runs, since = _failures(request, since_key)
    found = list(
        runs.filter(state="FAILURE", name=name, finished_at__gte=since)
        .exception_type()
        .filter(exc_type=exc_type)
        .defer("traceback", "result")
        .order_by("-id")[:limit]
    )
    if not found and scope_of(request).limited and not scope_of(request).allows_name(name):
        raise Http404(f"no failures of {name!r} in your scope")
    return found


@dashboard_view
def failure_group(request: HttpRequest) -> HttpResponse:
    get = request.GET
    runs = failure_group_runs(request, get.get("since", "24h"), get.get("name", ""), get.get("exc", ""), 20)
    return page(request, "taskdeck/partials/failure_runs.html", {"runs": runs})


def _cursor(after: str) -> int | None:
    """The run id a page starts after, or None (the first page) for anything that is not one.

    ASCII digits only: ``"³".isdigit()`` is true and ``int("³")`` raises; and no more than
    fit the id column (18 digits), whose overflow the database would refuse.
    """
    return int(after) if after.isascii() and after.isdigit() and len(after) <= 18 else None
