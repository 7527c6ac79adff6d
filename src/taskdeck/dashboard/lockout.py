"""Login throttling: a username with too many wrong passwords in a row is locked for a while.

After ``LOGIN_FAILURES`` failed logins for one username within
``LOGIN_LOCKOUT`` seconds, every login of that username is refused for
``LOGIN_LOCKOUT`` seconds, the right password included, and the lockout is
written to the audit log (``AuditEntry``, action ``lockout``). A successful
login clears the count.

Counted per username, not per client address: behind a reverse proxy every
client has the proxy's address. The counts live in the Django cache
``LOGIN_CACHE`` (``TASKDECK["DASHBOARD"]``): with several web processes it
must be a shared cache (Redis, the database), or each process counts alone.

:class:`LockoutModelBackend` takes the place of Django's ``ModelBackend`` in
``AUTHENTICATION_BACKENDS``: for a locked username it raises
``PermissionDenied``, which makes Django refuse the login without asking the
backends after it (the admin's login and the dashboard's alike).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

from taskdeck import conf


def _keys(username: str) -> tuple[str, str]:
    digest = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    return f"taskdeck:login-failures:{digest}", f"taskdeck:login-locked:{digest}"


def _cache() -> Any:
    return caches[conf.dashboard()["LOGIN_CACHE"]]


def is_locked(username: str | None) -> bool:
    return bool(username) and bool(_cache().get(_keys(str(username))[1]))


def lockout_minutes() -> int:
    return max(1, round(conf.dashboard()["LOGIN_LOCKOUT"] / 60))


class LockoutModelBackend(ModelBackend):
    """Django's ModelBackend that refuses every login of a locked username, the right password included."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        name = username or kwargs.get(get_user_model().USERNAME_FIELD)
        if is_locked(name):
            raise PermissionDenied(f"login of {name!r} locked after too many failures")
        return super().authenticate(request, username=username, password=password, **kwargs)


def _username(credentials: dict[str, Any]) -> str:
    return str(credentials.get("username") or credentials.get(get_user_model().USERNAME_FIELD) or "")


@receiver(user_login_failed, dispatch_uid="taskdeck-count-login-failure")
def count_failure(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = _username(credentials)
    if not username:
        return
    options = conf.dashboard()
    cache, (failures, locked) = _cache(), _keys(username)
    cache.add(failures, 0, timeout=options["LOGIN_LOCKOUT"])  # the window starts at the first failure
    try:
        count = cache.incr(failures)
    except ValueError:  # expired between add and incr
        cache.add(failures, 1, timeout=options["LOGIN_LOCKOUT"])
        count = 1
    if count == options["LOGIN_FAILURES"]:
        cache.set(locked, True, timeout=options["LOGIN_LOCKOUT"])
        _audit(username, count, request)


@receiver(user_logged_in, dispatch_uid="taskdeck-clear-login-failures")
def clear_failures(sender: Any, user: Any, request: Any = None, **kwargs: Any) -> None:
    _cache().delete(_keys(user.get_username())[0])


def _audit(username: str, count: int, request: Any) -> None:
    from taskdeck.models import AuditEntry

    users = get_user_model()
    user = users._default_manager.filter(**{users.USERNAME_FIELD: username}).first()
    AuditEntry.objects.create(
        user=user,
        username=username[:150],
        action=AuditEntry.Action.LOCKOUT,
        target=username[:255],
        ok=False,
        message=f"{count} failed logins in a row: logins of {username!r} refused "
        f"for {lockout_minutes()} minutes",
        detail={"failures": count, "seconds": conf.dashboard()["LOGIN_LOCKOUT"]},
        remote_addr=getattr(request, "META", {}).get("REMOTE_ADDR") or None,
    )
