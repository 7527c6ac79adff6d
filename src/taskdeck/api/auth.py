"""Who may read the monitor: a staff session, or an API token (``Authorization: Bearer``)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja.security import HttpBearer, SessionAuthIsStaff

from taskdeck import conf


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


#: Tried in order by django-ninja; the first that answers wins.
API_AUTH = [SessionAuthIsStaff(), TokenAuth()]


def staff_or_token(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For plain Django views (the OpenAPI schema and docs): same rule as the API."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if (user is not None and user.is_active and user.is_staff) or token_valid(bearer(request)):
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
