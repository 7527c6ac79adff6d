"""The JSON API under the dashboard's prefix (``/taskdeck/api/``), with its OpenAPI schema.

Thin functions: each reads through a queryset method or
:mod:`taskdeck.monitor.health` and returns a schema. Every endpoint, the
schema and the docs need an API token, or the session of a user the dashboard admits;
what each one sees is its scope (:mod:`taskdeck.policy.scope`): runs, queues, stats and
dead letters are read through it. Workers are the whole fleet, with the numbers of the scope;
health is the whole deployment's.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Field, NinjaAPI, Query, Schema
from pydantic import field_validator

from taskdeck.api import schemas
from taskdeck.api.auth import API_AUTH, DashboardSession, viewer_or_token
from taskdeck.api.messages import router as messages_router
from taskdeck.errors import first_line
from taskdeck.models import DeadLetter, QueueSample, TaskRun, TaskState
from taskdeck.monitor import health as health_
from taskdeck.monitor import series as series_
from taskdeck.monitor.queues import holds_unconsumed
from taskdeck.policy import (
    PERMISSIONS,
    audit_refusal,
    dead_letters_for,
    hide_header_links_outside,
    hide_links_outside,
    names_in_scope,
    refuse_outside,
    runs_for,
    scope_of,
    workers_for,
)
from taskdeck.querysets import SAMPLE_FIELDS, WORKERS_SHOWN

api = NinjaAPI(
    title="taskdeck",
    version="1",
    description="Task runs, queues, workers and stats recorded by the taskdeck recorder.",
    auth=API_AUTH,
    urls_namespace="taskdeck-api",
    docs_decorator=viewer_or_token,
)
api.add_router("", messages_router)


#: Columns only one task's answer shows: not read for lists.
DETAIL_ONLY = ("payload", "attempts")

#: Longest name, queue, worker or search accepted: the columns' size.
TEXT_LIMIT = 255


class TaskFilters(Schema):
    state: str | None = Field(None, description="Comma-separated states, e.g. FAILURE,RETRY")
    name: str | None = Field(None, max_length=TEXT_LIMIT)
    queue: str | None = Field(None, max_length=TEXT_LIMIT)
    worker: str | None = Field(None, max_length=TEXT_LIMIT)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    q: str | None = Field(
        None,
        max_length=TEXT_LIMIT,
        description="A task id, its first characters (4 or more), or part of a task name",
    )
    after: int | None = None
    limit: int = 50

    @field_validator("state")
    @classmethod
    def known_states(cls, value: str | None) -> str | None:
        """Each state one of TaskState's: an unknown one is refused (422), not searched for."""
        if value is None:
            return None
        states = [s.strip().upper() for s in value.split(",") if s.strip()]
        unknown = [s for s in dict.fromkeys(states) if s not in TaskState.values]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ValueError(f"unknown state {shown}; known: {', '.join(TaskState.values)}")
        return ",".join(dict.fromkeys(states)) or None


@api.get("/tasks", response=schemas.TaskPage, summary="Task runs, newest first (keyset pagination)")
def list_tasks(request, filters: Query[TaskFilters]):
    limit = max(1, min(filters.limit, 500))
    params = filters.dict(exclude={"after", "limit"})
    params["since"], params["until"] = _utc(filters.since), _utc(filters.until)
    keep = names_in_scope(request)
    rows = runs_for(request).search_page(filters.after, limit + 1, DETAIL_ONLY, keep_name=keep, **params)
    hide_links_outside(request, rows[:limit])
    items = schemas.dumped(schemas.TaskOut, rows[:limit])
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return api.create_response(request, {"items": items, "next": next_after}, status=200)


@api.get("/tasks/{task_id}", response=schemas.TaskDetail, summary="One task with its timeline and workflow")
def get_task(request, task_id: str):
    runs = runs_for(request)
    run: TaskRun = get_object_or_404(runs, task_id=task_id)
    flow = runs.briefly(*schemas.WORKFLOW_FIELDS).workflow(run)
    timeline = [step for step in run.steps() if step["at"] is not None and step["state"]]
    hide_links_outside(request, [run, *(r for runs in flow.values() for r in runs)])  # read by workflow()
    run.timeline = timeline  # type: ignore[attr-defined]
    run.workflow = {"parent": None, "children": [], "group": [], "tree": []}  # type: ignore[attr-defined]
    body = schemas.TaskDetail.model_validate(run).model_dump()
    # Up to 1,000 workflow runs (a run of a 2,000-run group): their columns as read, rendered
    # as ninja renders the rest; a model instance, then a schema object, per run cost two
    # thirds of the request.
    brief = {k: schemas.dumped(schemas.WorkflowRun, v) for k, v in flow.items()}
    body["workflow"] = {**brief, "parent": brief["parent"][0] if brief["parent"] else None}
    return api.create_response(request, body, status=200)


@api.get("/queues", response=list[schemas.QueueOut], summary="Latest depth of each queue")
def list_queues(request):
    scope = scope_of(request)
    declared = set(_declared())
    return [
        _queue([getattr(s, n) for n in SAMPLE_FIELDS], declared)
        for s in QueueSample.objects.latest_per_queue()
        if scope.allows_queue(s.queue)
    ]


@api.get(
    "/queues/{path:name}/samples", response=list[schemas.QueueOut], summary="Depth over time of one queue"
)
def queue_samples(request, name: str, since: dt.datetime | None = None, limit: int = 500):
    if not scope_of(request).allows_queue(name):
        raise Http404(f"no queue {name!r} in your scope")
    rows = QueueSample.objects.filter(queue=name)
    if since:
        rows = rows.filter(sampled_at__gte=_utc(since))
    declared = set(_declared())
    # Each a QueueOut's fields with their types (tests/monitor/test_monitor_api.py): up to
    # 5,000 of them, which ninja's validation, row by row, made twice as dear.
    samples = [_queue(s, declared) for s in rows.newest(max(1, min(limit, 5000)))]
    return api.create_response(request, samples, status=200)


def _declared() -> list[str]:
    from taskdeck import conf
    from taskdeck.monitor.queues import configured_queues

    return configured_queues(current_app, conf.monitor()["QUEUES"])()


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A query bound in UTC: PostgreSQL refuses offsets past ±15:59 that ISO 8601 allows."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is past the last datetime in UTC
        return (
            dt.datetime.max.replace(tzinfo=dt.UTC)
            if value.year == 9999
            else dt.datetime.min.replace(tzinfo=dt.UTC)
        )


def _queue(values: Sequence[Any], declared: set[str]) -> dict:
    """A QueueOut's fields, of a sample's values in :data:`~taskdeck.querysets.SAMPLE_FIELDS` order."""
    queue, sampled_at, ready, unacked, consumers, by_priority, oldest_age = values
    return {
        "name": queue,
        "sampled_at": sampled_at,
        "ready": ready,
        "unacked": unacked,
        "consumers": consumers,
        "by_priority": by_priority,
        "oldest_age": oldest_age,
        "declared": queue in declared,
        "without_consumer": holds_unconsumed(ready, consumers),
    }


@api.get(
    "/workers",
    response=list[schemas.WorkerOut],
    summary="Workers seen by the recorder",
    description=f"Online first, then by hostname; `limit` of them (default and most: {WORKERS_SHOWN}).",
)
def list_workers(request, limit: int = WORKERS_SHOWN):
    return workers_for(request, max(1, min(limit, WORKERS_SHOWN)))


@api.get(
    "/stats",
    response=schemas.Stats,
    summary="Throughput, failure rate and percentiles over a window, with the window's chart",
    description=(
        "Runs finished in the last `window` seconds (60 to 90 days), counted as the chart of that window"
        " counts them: `series` holds one point per `step` (1 h in minutes, 24 h in quarter hours,"
        " 7 d in hours, longer windows in 4 hours or days), the window rounded out to whole steps"
        " from `since`."
    ),
)
def stats(request, window: int = 300, name: str | None = None, queue: str | None = None):
    scope = scope_of(request)
    return health_.window_stats(max(60, min(window, 90 * 86400)), name=name, queue=queue, scope=scope)


@api.get("/series", response=schemas.Series, summary="Finished runs and latency per time bucket, for charts")
def series(request, window: int = 3600, name: str | None = None, queue: str | None = None):
    scope = scope_of(request)
    return series_.window_series(max(300, min(window, 30 * 86400)), name=name, queue=queue, scope=scope)


@api.get("/health", response=schemas.Health, summary="Broker, database, recorder lag and workers")
def health(request):
    return health_.health(current_app)


@api.exception_handler(TooManyFieldsSent)
@api.exception_handler(RequestDataTooBig)
def request_too_large(request: HttpRequest, exc: Exception) -> HttpResponse:
    """More parameters (or a larger body) than Django's DATA_UPLOAD_MAX_* settings allow: 400, saying so."""
    return api.create_response(request, {"detail": f"request refused: {exc}"}, status=400)


class DeadLetterFilters(Schema):
    kind: str | None = None
    task: str | None = None
    task_id: str | None = None
    after: int | None = None
    limit: int = 50


@api.get("/dead-letters", response=schemas.DeadLetterPage, summary="Dead letters, newest first")
def list_dead_letters(request, filters: Query[DeadLetterFilters]):
    limit = max(1, min(filters.limit, 500))
    rows = dead_letters_for(request).search(kind=filters.kind, task=filters.task, task_id=filters.task_id)
    if filters.after is not None:
        rows = rows.filter(id__lt=filters.after)
    page = list(rows.newest_first().defer("body", "headers", "properties")[: limit + 1])
    return {"items": page[:limit], "next": page[limit - 1].id if len(page) > limit else None}


@api.get("/dead-letters/{letter_id}", response=schemas.DeadLetterDetail, summary="One dead letter, raw")
def get_dead_letter(request, letter_id: str):
    letter: DeadLetter = get_object_or_404(dead_letters_for(request), pk=_letter_pk(letter_id))
    hide_header_links_outside(request, letter)
    body = None if letter.body is None else bytes(letter.body)
    letter.body_base64 = None if body is None else base64.b64encode(body).decode()  # type: ignore[attr-defined]
    letter.body_text = None if body is None else body.decode("utf-8", "backslashreplace")  # type: ignore[attr-defined]
    return letter


# Acting needs a user with the permission, and CSRF (the session's): tokens only read.
@api.post(
    "/dead-letters/{letter_id}/requeue",
    response={200: schemas.ActionOut, 409: schemas.ActionOut},
    auth=[DashboardSession()],
    summary="Publish a dead task message again where it came from (a new task id), if it is valid now",
)
def requeue_dead_letter(request, letter_id: str):
    return _act(request, letter_id, "requeue")


@api.delete(
    "/dead-letters/{letter_id}",
    response={200: schemas.ActionOut, 409: schemas.ActionOut},
    auth=[DashboardSession()],
    summary="Delete a dead letter",
)
def delete_dead_letter(request, letter_id: str):
    return _act(request, letter_id, "delete_letter")


def _act(request: HttpRequest, letter_id: str, action: str) -> HttpResponse:
    from taskdeck.dashboard.actions import Actions

    if not request.user.has_perm(PERMISSIONS["deadletters"]):
        user = request.user.get_username()
        message = f"{action} refused: {user} lacks the permission {PERMISSIONS['deadletters']!r}"
        permission = PERMISSIONS["deadletters"]
        audit_refusal(request, action, f"dead letter {letter_id}", message, permission=permission)
        needs = f"needs the permission {PERMISSIONS['deadletters']!r}"
        return api.create_response(request, {"ok": False, "message": needs, "detail": {}}, status=403)
    letter = dead_letters_for(request).filter(pk=_letter_pk(letter_id)).first()
    if letter is None:
        if scope_of(request).limited:
            refuse_outside(request, action, f"dead letter {letter_id}")
        return api.create_response(request, {"detail": "Not Found"}, status=404)
    actions = Actions(current_app, request.user, remote_addr=request.META.get("REMOTE_ADDR") or None)
    outcome = getattr(actions, action)(letter)
    body = {"ok": outcome.ok, "message": outcome.message, "detail": outcome.detail}
    return api.create_response(request, body, status=200 if outcome.ok else 409)


def _letter_pk(letter_id: str) -> int:
    try:
        return int(letter_id)
    except ValueError:
        raise Http404(f"no dead letter {letter_id!r}: ids are whole numbers") from None


@api.exception_handler(DataError)
def unusable_value(request: HttpRequest, exc: DataError) -> HttpResponse:
    """A parameter the database cannot compare with (a NUL character, a number out of range): 422."""
    line = first_line(exc)
    return api.create_response(
        request, {"detail": f"a parameter has a value the database refuses: {line}"}, status=422
    )


# Only a database that cannot be reached; any other database error is a bug, and stays a 500.
@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def database_unavailable(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    """The database does not answer: 503 naming the error, as the dashboard's banner does, not a 500."""
    line = first_line(exc)
    response = api.create_response(
        request, {"detail": f"database unavailable: {type(exc).__name__}: {line}"}, status=503
    )
    response["Retry-After"] = "10"
    return response
