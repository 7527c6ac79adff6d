"""Deployment checks (``manage.py check --deploy``): login throttling and assets served locally.

``taskdeck.W030``: no :class:`~taskdeck.dashboard.lockout.LockoutModelBackend` in
``AUTHENTICATION_BACKENDS``: wrong passwords are answered without limit.
``taskdeck.W031``: ``ninja`` is not in ``INSTALLED_APPS``: the API docs page
loads Swagger UI from a CDN (blank offline) instead of the app's own copy.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

LOCKOUT_BACKEND = "taskdeck.dashboard.lockout.LockoutModelBackend"


@register(Tags.security, deploy=True)
def check_security(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if LOCKOUT_BACKEND not in getattr(settings, "AUTHENTICATION_BACKENDS", []):
        messages.append(
            Warning(
                "logins are not throttled: AUTHENTICATION_BACKENDS has no LockoutModelBackend",
                hint=f'put "{LOCKOUT_BACKEND}" in AUTHENTICATION_BACKENDS in place of Django\'s '
                "ModelBackend (docs/dashboard.md)",
                id="taskdeck.W030",
            )
        )
    if "ninja" not in settings.INSTALLED_APPS:
        messages.append(
            Warning(
                "the API docs page loads Swagger UI from a CDN: 'ninja' is not in INSTALLED_APPS",
                hint='add "ninja" to INSTALLED_APPS: its own copy of Swagger UI is then served',
                id="taskdeck.W031",
            )
        )
    return messages
