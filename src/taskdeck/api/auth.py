"""Who may read the monitor: an API token (``Authorization: Bearer``), or a session of a user
the dashboard admits (active staff with ``taskdeck.view_dashboard``): one rule for both."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja.security import HttpBearer, SessionAuth

from taskdeck import conf
from taskdeck.dashboard.access import can_view


def token_valid(token: str | None) -> bool:
    if not token:
        return False
    from taskdeck.models import ApiToken

    if any(hmac.compare_digest(token, allowed) for allowed in conf.monitor()["TOKENS"]):
        return True
    return ApiToken.objects.filter(digest=ApiToken.hash(token)).exists()


def bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> str | None:
        return "token" if token_valid(token) else None


class DashboardSession(SessionAuth):
    """A logged-in user the dashboard would admit: the read-only role reads the API too."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        return user if user is not None and user.is_authenticated and can_view(user) else None


#: Tried in order by django-ninja; the first that answers wins.
API_AUTH = [DashboardSession(), TokenAuth()]


def viewer_or_token(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For plain Django views (the OpenAPI schema and docs): same rule as the API."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated and can_view(user)) or token_valid(bearer(request)):
            return view(request, *args, **kwargs)
        return JsonResponse({"detail": "Unauthorized"}, status=401)

    return wrapped


def metrics_allowed(request: HttpRequest) -> bool:
    """/metrics: a valid token, or a client address inside ``METRICS_NETWORKS``."""
    if token_valid(bearer(request)):
        return True
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        client in ipaddress.ip_network(net, strict=False) for net in conf.monitor()["METRICS_NETWORKS"]
    )
