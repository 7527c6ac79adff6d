"""Who may see and do what in the monitor: one policy for the dashboard, the JSON API and /metrics.

* Viewing: an active staff user with ``taskdeck.view_dashboard`` (a superuser
  has every permission), or an API token (:mod:`taskdeck.policy.clients`).
  Such a user without the action permissions below is the read-only role.
* Each action: its own permission (:data:`PERMISSIONS`); a refused one is
  written to the audit log (:func:`audit_refusal`).

The dashboard (:mod:`taskdeck.dashboard.access`), the API
(:mod:`taskdeck.api.auth`) and ``/metrics`` read these; nothing here imports them.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from taskdeck.policy.clients import (
    FORWARDING_HEADERS,
    bearer,
    client_address,
    configured_tokens,
    metrics_allowed,
    parse_networks,
    token_valid,
)

__all__ = [
    "FORWARDING_HEADERS",
    "PERMISSIONS",
    "VIEW",
    "abilities",
    "audit_refusal",
    "bearer",
    "can_view",
    "client_address",
    "configured_tokens",
    "metrics_allowed",
    "parse_networks",
    "token_valid",
]

VIEW = "taskdeck.view_dashboard"
#: Action name -> the permission it needs (``AuditEntry.Meta.permissions``).
PERMISSIONS = {
    "retry": "taskdeck.retry_task",
    "revoke": "taskdeck.revoke_task",
    "purge": "taskdeck.purge_queue",
    "control": "taskdeck.control_worker",
    "deadletters": "taskdeck.manage_deadletter",
}


def can_view(user: Any) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW))


def abilities(user: Any) -> dict[str, bool]:
    """``{"retry": True, ...}``: which actions the page may offer ``user``."""
    return {name: user.has_perm(permission) for name, permission in PERMISSIONS.items()}


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
