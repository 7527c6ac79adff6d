"""What the monitor persists: task runs, workers, rollups, queue samples, incidents.

The recorder (``taskdeck.monitor``) is the only writer of these tables except
:class:`ApiToken` and :class:`AuditEntry` (the dashboard's actions); the JSON
API, ``/metrics``, the dashboard and the terminal view only read them.
Queries live on :mod:`taskdeck.querysets`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from taskdeck.policy.scope import split_patterns, validate_patterns
from taskdeck.querysets import (
    DeadLetterQuerySet,
    QueueSampleQuerySet,
    RollupQuerySet,
    TaskRunQuerySet,
    WorkerQuerySet,
)


class TaskState(models.TextChoices):
    # Ranked in taskdeck.monitor.merge; final states never move back.
    SENT = "SENT", "sent"
    #: Set by the recorder (taskdeck.monitor.liveness), never by an event: sent, and not
    #: received after STUCK_AFTER seconds, or sent to a queue no online worker consumes.
    STUCK = "STUCK", "stuck"
    RECEIVED = "RECEIVED", "received"
    STARTED = "STARTED", "started"
    #: Set by the recorder, never by an event: received or started on a worker now offline.
    LOST = "LOST", "lost"
    RETRY = "RETRY", "retry"
    SUCCESS = "SUCCESS", "success"
    FAILURE = "FAILURE", "failure"
    REVOKED = "REVOKED", "revoked"
    REJECTED = "REJECTED", "rejected"


FINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED, TaskState.REJECTED})


class TaskRun(models.Model):
    """One task id as the recorder saw it, retries included (Celery keeps the id on retry)."""

    task_id = models.CharField("task id", max_length=255, help_text="Unique: see Meta.constraints.")
    name = models.CharField("task name", max_length=255, blank=True, default="")
    state = models.CharField("state", max_length=16, choices=TaskState.choices)
    state_at = models.FloatField(
        "state changed at", help_text="Event timestamp (epoch seconds) of the event that set the state."
    )
    queue = models.CharField("queue", max_length=255, blank=True, default="")
    routing_key = models.CharField("routing key", max_length=255, blank=True, default="")
    priority = models.IntegerField("priority", null=True, blank=True)
    worker = models.CharField("worker", max_length=255, blank=True, default="")
    args = models.TextField("args repr", blank=True, default="", help_text="Truncated repr.")
    kwargs = models.TextField("kwargs repr", blank=True, default="", help_text="Truncated repr.")
    result = models.TextField("result repr", blank=True, default="")
    exception = models.TextField("exception", blank=True, default="")
    traceback = models.TextField("traceback", blank=True, default="")
    retries = models.IntegerField("retries", default=0)
    first_seen_at = models.DateTimeField(
        "first seen at", help_text="Earliest timestamp of any event or result row of this task."
    )
    sent_at = models.DateTimeField("sent at", null=True, blank=True)
    received_at = models.DateTimeField("received at", null=True, blank=True)
    started_at = models.DateTimeField("started at", null=True, blank=True)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    wait_time = models.FloatField(
        "wait time (s)", null=True, blank=True, help_text="Sent (or received) to started."
    )
    runtime = models.FloatField("runtime (s)", null=True, blank=True)
    parent_id = models.CharField("parent id", max_length=255, blank=True, default="")
    root_id = models.CharField("root id", max_length=255, blank=True, default="")
    group_id = models.CharField("group id", max_length=255, blank=True, default="")
    reconstructed = models.BooleanField(
        "reconstructed",
        default=False,
        help_text="Final state read from django-celery-results: its event was missed.",
    )
    payload = models.TextField(
        "payload",
        blank=True,
        default="",
        help_text="Args and kwargs captured at publish, as JSON (taskdeck.payloads).",
    )
    attempts = models.JSONField(
        "attempts",
        default=list,
        blank=True,
        help_text="Start and end of each attempt (taskdeck.monitor.attempts).",
    )
    # Written by the recorder's liveness tick only (taskdeck.monitor.liveness); the event
    # merge never touches them, so they stay after the run leaves LOST or STUCK.
    lost_at = models.DateTimeField(
        "lost at", null=True, blank=True, help_text="When the recorder found the run's worker offline."
    )
    lost_worker = models.CharField(
        "lost on", max_length=255, blank=True, default="", help_text="The worker that went offline with it."
    )
    redeliver_at = models.DateTimeField(
        "redelivery due",
        null=True,
        blank=True,
        help_text="When the broker delivers the message again; empty: never (acked at start).",
    )
    stuck_at = models.DateTimeField(
        "stuck at", null=True, blank=True, help_text="When the recorder found the message waiting too long."
    )
    stuck_reason = models.CharField("stuck because", max_length=255, blank=True, default="")
    updated_at = models.DateTimeField("updated at", auto_now=True)

    objects = TaskRunQuerySet.as_manager()

    class Meta:
        verbose_name = "task run"
        verbose_name_plural = "task runs"
        # Every index is paid on each write of the recorder: each one here is
        # read by a request measured at a million runs (docs/benchmarks.md,
        # "Indexes of the run table"). Keyset pagination is newest first by id;
        # filters narrow it.
        constraints = [
            # One index for the id: equality (the recorder's upsert, every
            # lookup) and, by its operator class, an id's first characters
            # (LIKE 'abc%') whatever the database's collation.
            models.UniqueConstraint(
                fields=["task_id"], name="taskdeck_run_task_id", opclasses=["varchar_pattern_ops"]
            ),
        ]
        indexes = [
            models.Index(fields=["name", "-id"], name="taskdeck_run_name_id"),
            models.Index(fields=["first_seen_at"], name="taskdeck_run_seen"),
            # Rare states only: a page of SUCCESS runs (most of them) is the newest rows by id.
            models.Index(fields=["state", "-id"], name="taskdeck_run_state", condition=~Q(state="SUCCESS")),
            models.Index(fields=["queue", "-id"], name="taskdeck_run_queue"),
            models.Index(fields=["worker", "-id"], name="taskdeck_run_worker"),
            # The failures page: failed runs of the last hours or days (2% of the rows).
            # Its condition names finished_at, so only a query bounding finished_at
            # reads it: a page of failures by id reads the state index instead of
            # sorting every failure this one would find.
            models.Index(
                fields=["finished_at"],
                name="taskdeck_run_failed",
                condition=Q(state="FAILURE", finished_at__isnull=False),
            ),
            # Workflows: only the runs that have a parent, a group, or a root
            # other than themselves (most runs have none of them). Queries
            # repeat the condition (``workflow_runs``) so any database uses them.
            models.Index(fields=["parent_id", "id"], name="taskdeck_run_parent", condition=~Q(parent_id="")),
            models.Index(
                fields=["root_id", "id"], name="taskdeck_run_root", condition=~Q(root_id=F("task_id"))
            ),
            models.Index(fields=["group_id", "id"], name="taskdeck_run_group", condition=~Q(group_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.name}[{self.task_id}] {self.state}"

    def steps(self) -> list[dict[str, Any]]:
        """The timeline: sent, stuck, received, started, lost, finished; each ``{state, at, detail}``.

        ``at`` is None for a step not reached. STUCK and LOST appear only when
        the run was found so, and stay after it moved on.
        """
        steps: list[dict[str, Any]] = [{"state": "SENT", "at": self.sent_at, "detail": ""}]
        if self.stuck_at is not None:
            steps.append({"state": "STUCK", "at": self.stuck_at, "detail": self.stuck_reason})
        steps += [
            {"state": "RECEIVED", "at": self.received_at, "detail": ""},
            {"state": "STARTED", "at": self.started_at, "detail": ""},
        ]
        if self.lost_at is not None:
            steps.append({"state": "LOST", "at": self.lost_at, "detail": self.lost_detail()})
        final = self.state in FINAL_STATES
        steps.append({"state": self.state if final else "", "at": self.finished_at, "detail": ""})
        return steps

    def lost_detail(self) -> str:
        """Where it was lost, when the broker delivers it again, and whether it did."""
        if self.lost_at is None:
            return ""
        if self.redeliver_at is None:
            again = "not delivered again (acknowledged when it started)"
        else:
            again = f"redelivery due {self.redeliver_at:%Y-%m-%d %H:%M:%S} UTC"
        text = f"{self.lost_worker or 'its worker'} went offline; {again}"
        if self.state != TaskState.LOST:
            text += f"; redelivered: {self.state.lower()} on {self.worker or '?'}"
        return text


class Worker(models.Model):
    hostname = models.CharField("hostname", max_length=255, unique=True)
    online = models.BooleanField("online", default=False)
    last_heartbeat = models.DateTimeField("last heartbeat", null=True, blank=True)
    heartbeat_interval = models.FloatField("heartbeat interval (s)", default=2.0)
    pool = models.CharField("pool", max_length=64, blank=True, default="")
    concurrency = models.IntegerField("concurrency", null=True, blank=True)
    active = models.IntegerField("active tasks", default=0)
    processed = models.BigIntegerField("processed tasks", default=0)
    loadavg = models.JSONField("load average", default=list, blank=True)
    software = models.CharField("software", max_length=128, blank=True, default="")
    shut_down = models.BooleanField(
        "shut down",
        default=False,
        help_text="Went offline by a worker-offline event (warm shutdown), not missed heartbeats.",
    )
    queues = models.JSONField(
        "queues",
        null=True,
        blank=True,
        help_text="Queues it consumes (inspect active_queues); empty until it answers.",
    )
    updated_at = models.DateTimeField("updated at", auto_now=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = "worker"
        verbose_name_plural = "workers"

    def __str__(self) -> str:
        return self.hostname


class Rollup(models.Model):
    """Finished runs of one period, task name and queue: counts and latency histograms.

    Histograms are sparse log-scale bucket counts (:mod:`taskdeck.monitor.histogram`),
    so periods add up into any window and percentiles come out within ~5%.
    Each table is one period length; the recorder writes them all from the same
    runs (:mod:`taskdeck.monitor.rollups`), so a row of a coarse table is the
    sum of the finer rows of its period.
    """

    #: The column holding the period's start (UTC, aligned to the period) and the period in seconds.
    period_field: ClassVar[str]
    period: ClassVar[int]

    name = models.CharField("task name", max_length=255)
    queue = models.CharField("queue", max_length=255, blank=True, default="")
    succeeded = models.IntegerField("succeeded", default=0)
    failed = models.IntegerField("failed", default=0)
    revoked = models.IntegerField("revoked", default=0)
    rejected = models.IntegerField("rejected", default=0)
    retried = models.IntegerField("retries", default=0, help_text="Retries of the runs that finished.")
    runtime_hist = models.JSONField("runtime histogram", default=dict)
    wait_hist = models.JSONField("wait histogram", default=dict)

    objects = RollupQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.start():%Y-%m-%d %H:%M} {self.name} {self.queue}"

    def start(self) -> dt.datetime:
        """The start of this row's period."""
        value: dt.datetime = getattr(self, self.period_field)
        return value


class TaskRollup(Rollup):
    """Finished runs per minute, task name and queue: what alerts and short charts read."""

    period_field = "minute"
    period = 60

    minute = models.DateTimeField("minute")

    class Meta:
        verbose_name = "task rollup"
        verbose_name_plural = "task rollups"
        constraints = [
            models.UniqueConstraint(fields=["minute", "name", "queue"], name="taskdeck_rollup_key"),
        ]


class TaskRollupQuarter(Rollup):
    """Finished runs per quarter hour, task name and queue: what 24-hour charts read."""

    period_field = "quarter"
    period = 900

    quarter = models.DateTimeField(
        "quarter hour", help_text="Start of the quarter hour (:00, :15, :30 or :45)."
    )

    class Meta:
        verbose_name = "task rollup per quarter hour"
        verbose_name_plural = "task rollups per quarter hour"
        constraints = [
            models.UniqueConstraint(fields=["quarter", "name", "queue"], name="taskdeck_rollup_quarter_key"),
        ]


class TaskRollupHour(Rollup):
    """Finished runs per hour, task name and queue: what 7-day and longer charts read."""

    period_field = "hour"
    period = 3600

    hour = models.DateTimeField("hour", help_text="Start of the hour.")

    class Meta:
        verbose_name = "task rollup per hour"
        verbose_name_plural = "task rollups per hour"
        constraints = [
            models.UniqueConstraint(fields=["hour", "name", "queue"], name="taskdeck_rollup_hour_key"),
        ]


class TaskRollupAll(Rollup):
    """Finished runs per minute of every task name and queue together (``name`` and ``queue`` empty).

    The sum of the minute's :class:`TaskRollup` rows, written by the recorder
    with them: a chart of every task reads one row per period here instead
    of one per task name and queue (at a million runs a week, a cold 7-day
    chart decoded 4,032 histograms; here 336).
    """

    period_field = "minute"
    period = 60

    minute = models.DateTimeField("minute")

    class Meta:
        verbose_name = "rollup of every task"
        verbose_name_plural = "rollups of every task"
        constraints = [
            models.UniqueConstraint(fields=["minute", "name", "queue"], name="taskdeck_rollup_all_key"),
        ]


class TaskRollupQuarterAll(Rollup):
    """Finished runs per quarter hour of every task name and queue together (see :class:`TaskRollupAll`)."""

    period_field = "quarter"
    period = 900

    quarter = models.DateTimeField(
        "quarter hour", help_text="Start of the quarter hour (:00, :15, :30 or :45)."
    )

    class Meta:
        verbose_name = "rollup of every task per quarter hour"
        verbose_name_plural = "rollups of every task per quarter hour"
        constraints = [
            models.UniqueConstraint(
                fields=["quarter", "name", "queue"], name="taskdeck_rollup_quarter_all_key"
            ),
        ]


class TaskRollupHourAll(Rollup):
    """Finished runs per hour of every task name and queue together (see :class:`TaskRollupAll`)."""

    period_field = "hour"
    period = 3600

    hour = models.DateTimeField("hour", help_text="Start of the hour.")

    class Meta:
        verbose_name = "rollup of every task per hour"
        verbose_name_plural = "rollups of every task per hour"
        constraints = [
            models.UniqueConstraint(fields=["hour", "name", "queue"], name="taskdeck_rollup_hour_all_key"),
        ]


#: Every rollup table per task name and queue, finest first: a chart reads the coarsest that fits.
ROLLUPS: tuple[type[Rollup], ...] = (TaskRollup, TaskRollupQuarter, TaskRollupHour)
#: The table of every task's sums beside each of them: what a chart of every task reads instead.
ALL_TASKS: dict[type[Rollup], type[Rollup]] = {
    TaskRollup: TaskRollupAll,
    TaskRollupQuarter: TaskRollupQuarterAll,
    TaskRollupHour: TaskRollupHourAll,
}
#: Every table the recorder writes from the same runs, and retention prunes.
EVERY_ROLLUP: tuple[type[Rollup], ...] = (*ROLLUPS, *ALL_TASKS.values())


class TaskTotal(models.Model):
    """Cumulative finished runs per task name, queue and state since the first event.

    Never pruned: the counters ``/metrics`` exposes, with Prometheus ``le`` buckets.
    """

    name = models.CharField("task name", max_length=255)
    queue = models.CharField("queue", max_length=255, blank=True, default="")
    state = models.CharField("state", max_length=16, choices=TaskState.choices)
    count = models.BigIntegerField("count", default=0)
    runtime_buckets = models.JSONField("runtime le-buckets", default=list)
    runtime_sum = models.FloatField("runtime sum (s)", default=0.0)
    wait_buckets = models.JSONField("wait le-buckets", default=list)
    wait_sum = models.FloatField("wait sum (s)", default=0.0)

    class Meta:
        verbose_name = "task total"
        verbose_name_plural = "task totals"
        constraints = [
            models.UniqueConstraint(fields=["name", "queue", "state"], name="taskdeck_total_key"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.queue} {self.state}: {self.count}"


class QueueSample(models.Model):
    """One queue's depth at one moment, read from the broker; a time series."""

    sampled_at = models.DateTimeField("sampled at", db_index=True)
    queue = models.CharField("queue", max_length=255)
    ready = models.IntegerField("ready")
    unacked = models.IntegerField("unacknowledged", null=True, blank=True)
    consumers = models.IntegerField("consumers", null=True, blank=True)
    by_priority = models.JSONField(
        "ready per priority", default=dict, blank=True, help_text="Redis sub-queues: {step: count}."
    )
    oldest_age = models.FloatField("oldest message age (s)", null=True, blank=True)

    objects = QueueSampleQuerySet.as_manager()

    class Meta:
        verbose_name = "queue sample"
        verbose_name_plural = "queue samples"
        indexes = [models.Index(fields=["queue", "-sampled_at"], name="taskdeck_qsample_queue")]

    def __str__(self) -> str:
        return f"{self.queue}@{self.sampled_at}: {self.ready}"


class RecorderState(models.Model):
    """The recorder's own health, one row per recorder name."""

    name = models.CharField("name", max_length=64, unique=True, default="default")
    pid = models.IntegerField("pid", null=True, blank=True)
    started_at = models.DateTimeField("started at", null=True, blank=True)
    heartbeat_at = models.DateTimeField("heartbeat", null=True, blank=True)
    last_event_at = models.DateTimeField(
        "last event flushed", null=True, blank=True, help_text="Timestamp of the newest event written."
    )
    lag = models.FloatField("lag (s)", default=0.0, help_text="Event timestamp to write, last batch, max.")
    events = models.BigIntegerField("events processed", default=0)
    reconciled = models.BigIntegerField("runs reconstructed", default=0)
    backlog = models.BigIntegerField(
        "records waiting",
        null=True,
        blank=True,
        help_text="Entries in the records stream at the last heartbeat (record backend only).",
    )
    bad_events = models.JSONField(
        "bad events skipped",
        default=dict,
        blank=True,
        help_text="Events skipped as unusable, and rows the database refused: {reason: count}.",
    )

    class Meta:
        verbose_name = "recorder state"
        verbose_name_plural = "recorder states"

    def __str__(self) -> str:
        return f"recorder {self.name}"


class AlertIncident(models.Model):
    """One firing of an alert rule, from first breach to resolution."""

    rule = models.CharField("rule", max_length=128)
    subject = models.CharField(
        "subject", max_length=255, blank=True, default="", help_text="Queue, worker..."
    )
    opened_at = models.DateTimeField("opened at")
    resolved_at = models.DateTimeField("resolved at", null=True, blank=True)
    message = models.TextField("message")
    value = models.FloatField("value", null=True, blank=True)

    class Meta:
        verbose_name = "alert incident"
        verbose_name_plural = "alert incidents"
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=models.Q(resolved_at__isnull=True),
                name="taskdeck_incident_open",
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} {self.subject}"


class ApiToken(models.Model):
    """A bearer token for the JSON API and ``/metrics``; only its SHA-256 is stored.

    A token with an owner sees what its owner's scope admits (:class:`AccessScope`),
    and stops working when the owner is made inactive; one without an owner sees everything.
    """

    name = models.CharField("name", max_length=128, unique=True)
    digest = models.CharField("SHA-256", max_length=64, unique=True)
    created_at = models.DateTimeField("created at", auto_now_add=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="owner",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="taskdeck_tokens",
        help_text="The token sees what this user's access scope admits. Empty: everything.",
    )

    class Meta:
        verbose_name = "API token"
        verbose_name_plural = "API tokens"

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, name: str, owner: Any = None) -> str:
        """Create a token named ``name`` (with ``owner``'s scope) and return it; it cannot be shown again."""
        token = secrets.token_urlsafe(32)
        cls.objects.create(name=name, digest=cls.hash(token), owner=owner)
        return token


PATTERN_HELP = "Comma or line separated; * any characters, ? one (case-sensitive)"


class AccessScope(models.Model):
    """What the members of a group (or one user) see and act on: runs of matching task names or queues.

    A user's scope is the union of their rows and their groups' rows
    (:mod:`taskdeck.policy.scope`); a user with no row sees everything, as
    does a superuser. A run is in scope when its task name matches a task
    pattern or its queue a queue pattern; a queue (its page, depth and purge)
    when its name matches a queue pattern.
    """

    group = models.ForeignKey(
        "auth.Group",
        verbose_name="group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="taskdeck_scopes",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="user",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="taskdeck_scopes",
    )
    tasks = models.TextField(
        "task name patterns", blank=True, default="", validators=[validate_patterns], help_text=PATTERN_HELP
    )
    queues = models.TextField(
        "queue patterns", blank=True, default="", validators=[validate_patterns], help_text=PATTERN_HELP
    )

    class Meta:
        verbose_name = "access scope"
        verbose_name_plural = "access scopes"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(group__isnull=False, user__isnull=True)
                | models.Q(group__isnull=True, user__isnull=False),
                name="taskdeck_scope_group_or_user",
                violation_error_message="An access scope is for one group or one user: choose one.",
            )
        ]

    def __str__(self) -> str:
        who = f"group {self.group}" if self.group_id else f"user {self.user}"
        return f"{who}: {self.tasks or '-'} / {self.queues or '-'}".replace("\n", " ")

    def clean(self) -> None:
        if not split_patterns(self.tasks) and not split_patterns(self.queues):
            raise ValidationError(
                "Give at least one task name or queue pattern: an empty scope admits nothing."
            )


class AuditEntry(models.Model):
    """One action taken from the dashboard (retry, revoke, purge, worker control): who, when, on what.

    Written by :mod:`taskdeck.dashboard.actions`, whether the action worked or
    not. Its ``Meta.permissions`` are the dashboard's: a staff user needs
    ``view_dashboard`` to see it and one permission per kind of action.
    """

    class Action(models.TextChoices):
        RETRY = "retry", "retry"
        REVOKE = "revoke", "revoke"
        TERMINATE = "terminate", "revoke and terminate"
        PURGE = "purge", "purge queue"
        POOL_GROW = "pool_grow", "grow worker pool"
        POOL_SHRINK = "pool_shrink", "shrink worker pool"
        SHUTDOWN = "shutdown", "shut down worker"
        REQUEUE = "requeue", "requeue dead letter"
        DELETE_LETTER = "delete_letter", "delete dead letter"
        DELETE_MESSAGE = "delete_message", "delete waiting message"
        MOVE_MESSAGE = "move_message", "move waiting message"
        LOCKOUT = "lockout", "login locked out"
        REFUSED = "refused", "action refused"

    at = models.DateTimeField("at", auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="user",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    username = models.CharField("username", max_length=150, help_text="Kept when the user is deleted.")
    action = models.CharField("action", max_length=16, choices=Action.choices)
    target = models.CharField("target", max_length=255, help_text="Task id, queue name or worker hostname.")
    ok = models.BooleanField("succeeded", default=True)
    message = models.TextField("message", blank=True, default="", help_text="What happened, or the error.")
    detail = models.JSONField(
        "detail", default=dict, blank=True, help_text="E.g. the new task id of a retry, messages purged."
    )
    remote_addr = models.GenericIPAddressField("client address", null=True, blank=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        indexes = [models.Index(fields=["target", "action"], name="taskdeck_audit_target")]
        permissions = [
            ("view_dashboard", "Can view the taskdeck dashboard"),
            ("retry_task", "Can retry a task from the dashboard"),
            ("revoke_task", "Can revoke (and terminate) a task from the dashboard"),
            ("purge_queue", "Can purge a queue from the dashboard"),
            ("control_worker", "Can grow, shrink and shut down workers from the dashboard"),
            ("manage_messages", "Can delete and move waiting messages from the dashboard"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.target}"


class DeadLetterKind(models.TextChoices):
    MESSAGE = "message", "task message"
    EVENT = "event", "event"
    ROW = "row", "database row"
    RESULT = "result", "task result"


class DeadLetter(models.Model):
    """Something taskdeck refused to process, kept in its raw form (:mod:`taskdeck.deadletter`).

    A task message a worker could not turn into a task call, an event the
    recorder could not read, a row the database refused. Written by
    :func:`taskdeck.deadletter.store`; inspected, requeued and deleted from
    the API and the dashboard.
    """

    created_at = models.DateTimeField("created at", db_index=True)
    kind = models.CharField("kind", max_length=16, choices=DeadLetterKind.choices)
    reason = models.TextField("reason", help_text="Why it was refused.")
    source = models.CharField(
        "source", max_length=255, help_text="The process that refused it, e.g. a worker's hostname."
    )
    task_id = models.CharField("task id", max_length=255, blank=True, default="", db_index=True)
    task = models.CharField("task name", max_length=255, blank=True, default="")
    headers = models.JSONField("headers", default=dict, blank=True, help_text="As received.")
    properties = models.JSONField(
        "properties",
        default=dict,
        blank=True,
        help_text="Content type, encoding, exchange, routing key, broker properties.",
    )
    body = models.BinaryField("body", null=True, blank=True, help_text="Raw bytes as received.")
    body_size = models.BigIntegerField("body size", default=0, help_text="Bytes, before any cut.")
    truncated = models.BooleanField(
        "truncated", default=False, help_text="Only the first TASKDECK['DEAD_LETTER_BODY_BYTES'] kept."
    )

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"
        indexes = [models.Index(fields=["kind", "-id"], name="taskdeck_deadletter_kind")]
        permissions = [("manage_deadletter", "Can requeue and delete dead letters")]

    def __str__(self) -> str:
        return f"{self.kind} {self.task or '?'}[{self.task_id or '?'}]: {self.reason[:80]}"
