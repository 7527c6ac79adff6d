"""The monitor's tables in Django's admin: read-only views of what the recorder wrote, the audit
log, API tokens (issued here, shown once) and access scopes."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib import admin, messages
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
    TaskRollupHour,
    TaskRollupQuarter,
    TaskRun,
    TaskTotal,
    Worker,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """The recorder owns these rows: the admin shows them and may delete them, never edits them."""

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


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "online", "pool", "concurrency", "active", "processed", "last_heartbeat")
    list_filter = ("online",)
    search_fields = ("hostname",)


@admin.register(TaskRollup)
class TaskRollupAdmin(ReadOnlyAdmin):
    list_display = ("minute", "name", "queue", "succeeded", "failed", "revoked", "rejected", "retried")
    search_fields = ("^name",)
    ordering = ("-minute",)
    show_full_result_count = False


@admin.register(TaskRollupQuarter)
class TaskRollupQuarterAdmin(TaskRollupAdmin):
    list_display = ("quarter", *TaskRollupAdmin.list_display[1:])
    ordering = ("-quarter",)


@admin.register(TaskRollupHour)
class TaskRollupHourAdmin(TaskRollupAdmin):
    list_display = ("hour", *TaskRollupAdmin.list_display[1:])
    ordering = ("-hour",)


@admin.register(TaskTotal)
class TaskTotalAdmin(ReadOnlyAdmin):
    list_display = ("name", "queue", "state", "count", "runtime_sum", "wait_sum")
    list_filter = ("state",)
    search_fields = ("name",)


@admin.register(QueueSample)
class QueueSampleAdmin(ReadOnlyAdmin):
    list_display = ("sampled_at", "queue", "ready", "unacked", "consumers", "oldest_age")
    ordering = ("-sampled_at",)
    show_full_result_count = False


@admin.register(RecorderState)
class RecorderStateAdmin(ReadOnlyAdmin):
    list_display = (
        "name", "pid", "started_at", "heartbeat_at", "last_event_at", "lag", "events", "reconciled"
    )  # fmt: skip


@admin.register(AlertIncident)
class AlertIncidentAdmin(ReadOnlyAdmin):
    list_display = ("rule", "subject", "opened_at", "resolved_at", "value")
    list_filter = ("rule",)
    ordering = ("-opened_at",)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "username", "action", "target", "ok", "message")
    list_filter = ("action", "ok")
    search_fields = ("=target", "username")
    ordering = ("-at",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit log nobody can edit from the UI


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
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


@admin.register(AccessScope)
class AccessScopeAdmin(admin.ModelAdmin):
    """Scopes per group or user: a bad pattern is a form error here, never an error on a page later."""

    list_display = ("group", "user", "tasks", "queues")
    list_filter = ("group",)
    fields = ("group", "user", "tasks", "queues")
