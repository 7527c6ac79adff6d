"""Response shapes of the JSON API (they make the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ninja import Field, Schema


def dumped(schema: type[Schema], rows: Iterable[Any]) -> list[dict[str, Any]]:
    """``rows`` as ``schema.model_validate(row).model_dump()`` gives them, without validating each.

    For a list of rows (objects, or dicts such as a ``querysets.Row``) whose
    values have the fields' types already (a model's columns, as the database
    gives them), of a schema of plain fields (no ``resolve_`` method, no
    nested schema). ninja validates each row of a
    response from its attributes, a Python call per field: 500 runs of
    ``api/tasks`` spent most of their CPU there, 5,000 queue samples 0.3 s
    (docs/benchmarks.md). tests/monitor/test_monitor_api.py holds the output to
    the validated one's.
    """
    names = tuple(schema.model_fields)
    # A dict's keys directly: a Row's attributes go through its __getattr__, a call each.
    return [
        {name: row[name] for name in names}
        if isinstance(row, dict)
        else {name: getattr(row, name) for name in names}
        for row in rows
    ]


class TaskOut(Schema):
    task_id: str
    name: str
    state: str
    queue: str
    routing_key: str
    priority: int | None
    worker: str
    args: str
    kwargs: str
    result: str
    exception: str
    retries: int
    first_seen_at: dt.datetime
    sent_at: dt.datetime | None
    received_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    wait_time: float | None
    runtime: float | None
    parent_id: str
    root_id: str
    group_id: str
    reconstructed: bool
    #: Set when the run was found LOST (its worker went offline mid-run); kept after it leaves LOST.
    lost_at: dt.datetime | None
    lost_worker: str
    #: When the broker gives the lost message to a worker again; null if it never will.
    redeliver_at: dt.datetime | None
    #: Set when the run was found STUCK (not received in time, or no consumer); kept after.
    stuck_at: dt.datetime | None
    stuck_reason: str


class TaskPage(Schema):
    items: list[TaskOut]
    #: Pass as ``after`` for the next page; null on the last page.
    next: int | None


class TimelineEntry(Schema):
    state: str
    at: dt.datetime
    #: LOST: the worker and the redelivery; STUCK: why.
    detail: str = ""


class WorkflowRun(Schema):
    """A run of a workflow in brief (its whole record: ``GET tasks/{task_id}``)."""

    task_id: str
    name: str
    state: str
    queue: str
    worker: str
    retries: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    runtime: float | None
    parent_id: str
    root_id: str
    group_id: str


#: The run columns a :class:`WorkflowRun` reads.
WORKFLOW_FIELDS = tuple(WorkflowRun.model_fields)


class Workflow(Schema):
    """Up to 500 runs in each list, oldest first."""

    parent: WorkflowRun | None
    children: list[WorkflowRun]
    group: list[WorkflowRun]
    #: Every run under the same root (chains, chord header and callback).
    tree: list[WorkflowRun]


class PayloadOut(Schema):
    """The arguments captured at publish (``captured`` false: none were, and a retry is refused)."""

    captured: bool
    #: As JSON values, as kombu encoded them (a datetime is ``{"__type__": "datetime", ...}``).
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    #: Cut to ``TASKDECK["PAYLOADS"]["MAX_BYTES"]``: not the whole arguments.
    truncated: bool
    #: Values replaced by ``"[redacted]"`` (or dropped, null): not the arguments as sent.
    redacted: bool


class AttemptOut(Schema):
    """One execution of the task id: the first, then one per retry (``number`` counts those kept)."""

    number: int
    #: The message's retry count (0 for the first), when its task-received event was seen.
    retries: int | None
    worker: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    #: STARTED while it runs; RETRY, FAILURE, SUCCESS or REVOKED once it ended; LOST when its
    #: message was started again (redelivered) before it ended.
    state: str
    runtime: float | None
    exception: str


class TaskDetail(TaskOut):
    traceback: str
    timeline: list[TimelineEntry]
    workflow: Workflow
    payload: PayloadOut
    attempts: list[AttemptOut]

    @staticmethod
    def resolve_payload(run: Any) -> dict[str, Any]:
        from taskdeck import payloads

        return payloads.shown(run.payload).as_dict()

    @staticmethod
    def resolve_attempts(run: Any) -> list[dict[str, Any]]:
        from taskdeck.monitor.attempts import attempts

        out = []
        for attempt in attempts(run.attempts):
            for key in ("started_at", "finished_at"):
                at = attempt[key]
                attempt[key] = None if at is None else dt.datetime.fromtimestamp(at, dt.UTC)
            out.append(attempt)
        return out


class QueueOut(Schema):
    name: str
    sampled_at: dt.datetime
    ready: int
    unacked: int | None
    consumers: int | None
    by_priority: dict[str, int]
    oldest_age: float | None
    declared: bool = Field(description="Declared by the app (CELERY_TASK_QUEUES or the default queue)")
    without_consumer: bool = Field(description="Holds ready messages and no worker consumes it")


class WorkerOut(Schema):
    hostname: str
    online: bool
    last_heartbeat: dt.datetime | None
    pool: str
    concurrency: int | None
    #: Runs executing now; for a scoped caller, the runs of its scope.
    active: int
    #: Runs the worker finished; null for a scoped caller (the count is every team's).
    processed: int | None
    loadavg: list[float]


class Percentiles(Schema):
    p50: float | None
    p95: float | None
    p99: float | None


class SeriesPoint(Schema):
    #: Start of the bucket.
    t: dt.datetime
    succeeded: int
    failed: int
    revoked: int
    rejected: int
    retried: int
    runtime_p50: float | None
    runtime_p95: float | None
    wait_p50: float | None
    wait_p95: float | None


class SeriesSummary(Schema):
    finished: int
    succeeded: int
    failed: int
    revoked: int
    rejected: int
    retried: int
    #: Finished runs per second over the window.
    throughput: float
    failure_rate: float
    runtime: Percentiles
    wait: Percentiles


class Stats(SeriesSummary):
    window: int
    #: The window as the dashboard and the terminal views name it: "last 5m".
    window_name: str
    #: Seconds per point of ``series``: the step of the window's chart.
    step: int
    #: Start of the first step: the window rounded out to whole steps.
    since: dt.datetime
    until: dt.datetime
    #: The window's chart: one point per step, the newest one still open.
    series: list[SeriesPoint]


class Series(Schema):
    window: int
    #: The window as the dashboard and the terminal views name it: "last 1h".
    window_name: str
    #: Seconds per bucket.
    step: int
    since: dt.datetime
    until: dt.datetime
    summary: SeriesSummary
    points: list[SeriesPoint]


class Health(Schema):
    ok: bool
    broker: dict[str, Any]
    database: dict[str, Any]
    recorder: dict[str, Any]
    workers: dict[str, Any]


class DeadLetterOut(Schema):
    id: int
    created_at: dt.datetime
    kind: str
    reason: str
    source: str
    task_id: str
    task: str
    body_size: int
    truncated: bool


class DeadLetterPage(Schema):
    items: list[DeadLetterOut]
    #: Pass as ``after`` for the next page; null on the last page.
    next: int | None


class DeadLetterDetail(DeadLetterOut):
    headers: dict[str, Any]
    properties: dict[str, Any]
    #: The body as kept, base64; null when there was none.
    body_base64: str | None
    #: The body as UTF-8 text, undecodable bytes escaped (``\xff``).
    body_text: str | None


class ActionOut(Schema):
    ok: bool
    message: str
    detail: dict[str, Any]


class WaitingOut(Schema):
    ref: str = Field(description="The task id, or raw-<digest> of an unreadable message's bytes")
    position: int = Field(description="0 = the oldest of its sub-queue")
    priority: int | None
    size: int = Field(description="Bytes as the broker holds it")
    task: str | None
    task_id: str | None
    args: Any = Field(description="Positional arguments, secret keys redacted")
    kwargs: Any = Field(description="Keyword arguments, secret keys redacted")
    eta: str | None
    expires: str | None
    retries: int | None
    redacted: bool
    truncated: bool = Field(
        description="Arguments cut to TASKDECK['PAYLOADS']['MAX_BYTES'] in a list (one message is whole)"
    )
    redelivered: bool
    problem: str | None = Field(description="Why it cannot be read as a task call; null when it can")
    preview: str | None = Field(description="The first bytes of an unreadable message, as text")
    age: float | None = Field(description="Seconds since it was sent, where the recorder saw it")


class SubQueueOut(Schema):
    priority: int | None = Field(description="Redis priority step (0 runs first); null on RabbitMQ")
    total: int
    offset: int
    next_offset: int | None
    messages: list[WaitingOut]


class MessagesOut(Schema):
    queue: str
    sub_queues: list[SubQueueOut]
