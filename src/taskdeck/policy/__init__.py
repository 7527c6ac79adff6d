"""Who may see and do what in the monitor: one policy for the dashboard, the JSON API and /metrics.

* Viewing: an active staff user with ``taskdeck.view_dashboard`` (a superuser
  has every permission), or an API token (:mod:`taskdeck.policy.clients`).
  Such a user without the action permissions below is the read-only role.
* Each action: its own permission (:data:`PERMISSIONS`); a refused one is
  written to the audit log (:func:`audit_refusal`).
* What each one sees and acts on: its scope (:mod:`taskdeck.policy.scope`),
  by task-name and queue patterns per group or user; a token has its owner's.
  Outside it a run, queue or dead letter does not exist (404), and an action
  on it is refused and audited (:func:`refuse_outside`). Workers serve every
  team: each is shown, with the scope's numbers (:func:`workers_for`).

The dashboard (:mod:`taskdeck.dashboard.access`), the API
(:mod:`taskdeck.api.auth`), ``/metrics`` and the admin (:mod:`taskdeck.admin`)
read these; nothing here imports them.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from taskdeck.policy.clients import (
    FORWARDING_HEADERS,
    SETTINGS_TOKEN,
    bearer,
    client_address,
    configured_tokens,
    find_token,
    metrics_allowed,
    parse_networks,
    token_valid,
)
from taskdeck.policy.scope import (
    Scope,
    audit_for,
    dead_letters_for,
    hide_header_links_outside,
    hide_links_outside,
    incidents_for,
    names_in_scope,
    queue_samples_for,
    rollups_q,
    runs_for,
    scope_for,
    scope_of,
    token_scope,
    validate_patterns,
    workers_for,
)

__all__ = [
    "FORWARDING_HEADERS",
    "PERMISSIONS",
    "SETTINGS_TOKEN",
    "VIEW",
    "Scope",
    "abilities",
    "audit_for",
    "audit_refusal",
    "bearer",
    "can_view",
    "client_address",
    "configured_tokens",
    "dead_letters_for",
    "find_token",
    "hide_header_links_outside",
    "hide_links_outside",
    "incidents_for",
    "metrics_allowed",
    "metrics_scope",
    "names_in_scope",
    "parse_networks",
    "queue_samples_for",
    "refuse_outside",
    "rollups_q",
    "runs_for",
    "scope_for",
    "scope_of",
    "token_scope",
    "token_valid",
    "validate_patterns",
    "workers_for",
]

VIEW = "taskdeck.view_dashboard"
#: Action name -> the permission it needs (``AuditEntry.Meta.permissions``).
PERMISSIONS = {
    "retry": "taskdeck.retry_task",
    "revoke": "taskdeck.revoke_task",
    "purge": "taskdeck.purge_queue",
    "control": "taskdeck.control_worker",
    "deadletters": "taskdeck.manage_deadletter",
    "messages": "taskdeck.manage_messages",
}


def can_view(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW))


def abilities(user: Any, scope: Scope | None = None) -> dict[str, bool]:
    """``{"retry": True, ...}``: which actions the page may offer ``user``.

    Workers serve every queue: a user whose ``scope`` is limited does not control them.
    """
    can = {name: user.has_perm(permission) for name, permission in PERMISSIONS.items()}
    if scope is not None and scope.limited:
        can["control"] = False
    return can


def metrics_scope(request: HttpRequest) -> Scope | None:
    """What a /metrics scrape sees: its token's scope, everything from an allowed network, None: refused."""
    holder = find_token(bearer(request))
    if holder is not None:
        return Scope.everything() if holder is SETTINGS_TOKEN else token_scope(holder)
    return Scope.everything() if metrics_allowed(request) else None


def refuse_outside(request: HttpRequest, action: str, target: str) -> None:
    """Audit an action on something outside the scope of ``request``'s user (who then gets a 404).

    A 404, not a 403: whether the run, queue or letter exists is not told. The
    caller returns it rather than raising it, so that a project with
    ``ATOMIC_REQUESTS`` keeps the audit entry.
    """
    user: Any = request.user
    scope = scope_of(request)
    message = (
        f"{action} refused: {target} is not in the scope of {user.get_username()} ({scope.describe()}), "
        "or does not exist"
    )
    audit_refusal(request, action, target, message, scope=scope.describe())


def audit_refusal(request: HttpRequest, action: str, target: str, message: str, **detail: Any) -> None:
    """A refused action is in the audit log too: who tried what, on what, from where, and why not."""
    from taskdeck.models import AuditEntry

    user: Any = request.user
    AuditEntry.objects.create(
        user=user if getattr(user, "pk", None) else None,
        username=user.get_username() if getattr(user, "pk", None) else "",
        action=AuditEntry.Action.REFUSED,
        target=str(target)[:255],
        ok=False,
        message=message,
        detail={"action": action, "path": request.path[:500], **detail},
        remote_addr=request.META.get("REMOTE_ADDR") or None,
    )
