"""The API's side of the access policy (:mod:`taskdeck.policy`): django-ninja's authentication.

Who may read the monitor: an API token (``Authorization: Bearer``), or a session of a user
the dashboard admits (active staff with ``taskdeck.view_dashboard``): one rule for both."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from taskdeck.policy import bearer, can_view, find_token, token_valid


class TokenAuth(HttpBearer):
    """``request.auth`` becomes the token's holder: an ApiToken (its owner's scope), or a settings token."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return find_token(token)


#: Said to a token that tries to act (its request would otherwise fail as "CSRF check Failed").
TOKENS_ONLY_READ = (
    "API tokens only read: acting (requeue, retry, delete, move) needs a dashboard session "
    "of a user with the permission, and its CSRF token"
)


class DashboardSession(SessionAuth):
    """A logged-in user the dashboard would admit: the read-only role reads the API too."""

    def _get_key(self, request: HttpRequest) -> str | None:
        user = getattr(request, "user", None)
        acting = request.method not in {"GET", "HEAD", "OPTIONS"}
        if acting and bearer(request) and not (user is not None and user.is_authenticated):
            raise HttpError(403, TOKENS_ONLY_READ)
        return super()._get_key(request)

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
