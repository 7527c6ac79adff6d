"""The monitor's tables in Django's admin: read-only views of what the recorder wrote, the audit
log, API tokens (issued here, shown once) and access scopes.

A staff user with a limited access scope (:mod:`taskdeck.policy.scope`) sees
the rows of its scope only, as on the dashboard, and neither tokens nor scopes:
issuing a token without owner, or editing a scope, would widen its own.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from taskdeck.models import (
    AccessScope,
    AlertIncident,
    ApiToken,
    AuditEntry,
    DeadLetter,
    QueueSample,
    RecorderState,
    TaskRollup,
    TaskRollupAll,
    TaskRollupHour,
    TaskRollupHourAll,
    TaskRollupQuarter,
    TaskRollupQuarterAll,
    TaskRun,
    TaskTotal,
    Worker,
)
from taskdeck.policy import (
    audit_for,
    dead_letters_for,
    hide_header_links_outside,
    hide_links_outside,
    incidents_for,
    queue_samples_for,
    rollups_q,
    runs_for,
    scope_of,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """The recorder owns these rows: the admin shows them and may delete them, never edits them.

    :meth:`scoped` gives the rows the request's access scope admits (through :mod:`taskdeck.policy`).
    """

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = self.scoped(request)
        return rows if rows is not None else super().get_queryset(request)

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        """The rows of the request's scope; None: every row (a table no scope limits)."""
        return None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "name", "state", "queue", "worker", "retries", "first_seen_at", "runtime")
    list_filter = ("state",)
    # Exact id or name prefix: both use an index on a million rows.
    search_fields = ("=task_id", "^name")
    ordering = ("-id",)
    show_full_result_count = False
    list_per_page = 50

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return runs_for(request)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        run = super().get_object(request, object_id, from_field)
        if run is not None:
            hide_links_outside(request, [run])  # shown only: the admin never saves a run
        return run


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "online", "pool", "concurrency", "active", "processed", "last_heartbeat")
    list_filter = ("online",)
    search_fields = ("hostname",)
    #: Every team's numbers and queues: not shown to a limited scope (the dashboard shows its own).
    FLEET_ONLY = ("active", "processed", "queues")

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)
        return [f for f in shown if f not in self.FLEET_ONLY] if scope_of(request).limited else shown

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.FLEET_ONLY if scope_of(request).limited else super().get_exclude(request, obj)


@admin.register(TaskRollup)
class TaskRollupAdmin(ReadOnlyAdmin):
    list_display = ("minute", "name", "queue", "succeeded", "failed", "revoked", "rejected", "retried")
    search_fields = ("^name",)
    ordering = ("-minute",)
    show_full_result_count = False

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return self.model.objects.filter(rollups_q(scope_of(request)))


@admin.register(TaskRollupQuarter)
class TaskRollupQuarterAdmin(TaskRollupAdmin):
    list_display = ("quarter", *TaskRollupAdmin.list_display[1:])
    ordering = ("-quarter",)


@admin.register(TaskRollupHour)
class TaskRollupHourAdmin(TaskRollupAdmin):
    list_display = ("hour", *TaskRollupAdmin.list_display[1:])
    ordering = ("-hour",)


@admin.register(TaskRollupAll)
class TaskRollupAllAdmin(ReadOnlyAdmin):
    list_display = ("minute", "succeeded", "failed", "revoked", "rejected", "retried")
    ordering = ("-minute",)
    show_full_result_count = False

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        # Sums over every task name and queue: none of them within a limited scope.
        return self.model.objects.none() if scope_of(request).limited else None


@admin.register(TaskRollupQuarterAll)
class TaskRollupQuarterAllAdmin(TaskRollupAllAdmin):
    list_display = ("quarter", *TaskRollupAllAdmin.list_display[1:])
    ordering = ("-quarter",)


@admin.register(TaskRollupHourAll)
class TaskRollupHourAllAdmin(TaskRollupAllAdmin):
    list_display = ("hour", *TaskRollupAllAdmin.list_display[1:])
    ordering = ("-hour",)


@admin.register(TaskTotal)
class TaskTotalAdmin(ReadOnlyAdmin):
    list_display = ("name", "queue", "state", "count", "runtime_sum", "wait_sum")
    list_filter = ("state",)
    search_fields = ("name",)

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return TaskTotal.objects.filter(rollups_q(scope_of(request)))


@admin.register(QueueSample)
class QueueSampleAdmin(ReadOnlyAdmin):
    list_display = ("sampled_at", "queue", "ready", "unacked", "consumers", "oldest_age")
    ordering = ("-sampled_at",)
    show_full_result_count = False

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return queue_samples_for(request)


@admin.register(RecorderState)
class RecorderStateAdmin(ReadOnlyAdmin):
    list_display = (
        "name", "pid", "started_at", "heartbeat_at", "last_event_at", "lag", "backlog", "events", "reconciled"
    )  # fmt: skip


@admin.register(AlertIncident)
class AlertIncidentAdmin(ReadOnlyAdmin):
    list_display = ("rule", "subject", "opened_at", "resolved_at", "value")
    list_filter = ("rule",)
    ordering = ("-opened_at",)

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return incidents_for(request)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "username", "action", "target", "ok", "message")
    list_filter = ("action", "ok")
    search_fields = ("=target", "username")
    ordering = ("-at",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit log nobody can edit from the UI

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return audit_for(request)


class UnscopedOnlyAdmin(admin.ModelAdmin):
    """Who may read the monitor, and what: for users without a limited scope only.

    A limited one could otherwise issue a token without owner (no limit) or
    edit its own scope; neither the pages nor the buttons are offered.
    """

    def has_module_permission(self, request: HttpRequest) -> bool:
        return not scope_of(request).limited and super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not scope_of(request).limited and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not scope_of(request).limited and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not scope_of(request).limited and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not scope_of(request).limited and super().has_delete_permission(request, obj)


@admin.register(ApiToken)
class ApiTokenAdmin(UnscopedOnlyAdmin):
    """Add a token by name; its value is shown once, in the message after saving."""

    list_display = ("name", "owner", "created_at")
    fields = ("name", "owner")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        token = secrets.token_urlsafe(32)
        obj.digest = ApiToken.hash(token)
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"API token {obj.name!r}: {token} — copy it now: it cannot be shown again.",
        )


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "task", "task_id", "source", "reason", "body_size")
    list_filter = ("kind",)
    search_fields = ("task_id", "task")

    def scoped(self, request: HttpRequest) -> QuerySet[Any] | None:
        return dead_letters_for(request)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        letter = super().get_object(request, object_id, from_field)
        if letter is not None:
            hide_header_links_outside(request, letter)  # shown only: the admin never saves a letter
        return letter


@admin.register(AccessScope)
class AccessScopeAdmin(UnscopedOnlyAdmin):
    """Scopes per group or user: a bad pattern is a form error here, never an error on a page later."""

    list_display = ("group", "user", "tasks", "queues")
    list_filter = ("group",)
    fields = ("group", "user", "tasks", "queues")
