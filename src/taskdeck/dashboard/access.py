"""The dashboard's side of the access policy (:mod:`taskdeck.policy`): login, decorators, the down page.

* Nobody anonymous: every page redirects to the dashboard's login.
* Viewing: what :func:`taskdeck.policy.can_view` admits.
* Each action: POST, a valid CSRF token, and its own permission
  (:data:`taskdeck.policy.PERMISSIONS`); a refusal is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError, DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from taskdeck.errors import first_line
from taskdeck.policy import PERMISSIONS, audit_refusal, can_view, refuse_outside

View = Callable[..., HttpResponse]


class StaffLoginForm(AuthenticationForm):
    """Django's login form that turns away accounts the dashboard would refuse anyway, and locked ones."""

    def clean(self) -> dict[str, Any]:
        from taskdeck.dashboard.lockout import is_locked, lockout_minutes

        if is_locked(self.cleaned_data.get("username")):
            raise forms.ValidationError(
                "Too many failed logins for this account: logins are refused for up to "
                f"{lockout_minutes()} minutes. An administrator can see it in the audit log.",
                code="locked",
            )
        return super().clean()

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not can_view(user):
            raise forms.ValidationError(
                "This account may not use the dashboard: it needs staff status and the permission "
                "“Can view the taskdeck dashboard”.",
                code="not_allowed",
            )


def dashboard_view(view: View) -> View:
    """Login and view permission; a database error becomes a 503 page with a banner, not a 500."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            user = request.user
            if not user.is_authenticated:
                return _to_login(request)
            if not can_view(user):
                return render(
                    request,
                    "taskdeck/denied.html",
                    {"needs": "a staff account with the permission “Can view the taskdeck dashboard”"},
                    status=403,
                )
            response = view(request, *args, **kwargs)
            if isinstance(response, TemplateResponse):
                response.render()  # inside the try: templates read querysets lazily
            return response
        except DataError as exc:  # a parameter the database cannot compare with (a NUL character)
            line = first_line(exc)
            return HttpResponseBadRequest(
                f"a parameter has a value the database refuses: {line}\n", content_type="text/plain"
            )
        except DatabaseError as exc:
            return database_down(request, exc)

    return wrapped


def _to_login(request: HttpRequest) -> HttpResponse:
    if request.headers.get("HX-Request"):
        # A live part whose session ended: the whole page goes to the login, not the banner.
        page = urlsplit(request.headers.get("HX-Current-URL", "")).path or reverse("taskdeck:overview")
        response = HttpResponse(status=204)
        response["HX-Redirect"] = f"{reverse('taskdeck:login')}?{urlencode({'next': page})}"
        return response
    return redirect_to_login(request.get_full_path(), reverse("taskdeck:login"))


def action_view(action: str) -> Callable[[View], View]:
    """POST only, CSRF checked (even where the middleware is missing), and ``action``'s permission."""
    permission = PERMISSIONS[action]

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                user: Any = request.user
                target = next(iter(kwargs.values()), None) or request.POST.get("name", "")
                message = f"{action} refused: {user.get_username()} lacks the permission {permission!r}"
                audit_refusal(request, action, str(target), message, permission=permission)
                return render(
                    request,
                    "taskdeck/denied.html",
                    {"needs": f"the permission {permission!r}", "action": action},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return dashboard_view(require_POST(csrf_protect(checked)))

    return decorate


def outside_scope(request: HttpRequest, action: str, target: str) -> HttpResponse:
    """An action on a run, queue or dead letter outside the user's scope: audited, and Django's 404 page."""
    from django.http import Http404
    from django.views.defaults import page_not_found

    refuse_outside(request, action, target)
    return page_not_found(request, Http404(f"no {target!r} in your scope"))


def database_down(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The page for a database that does not answer: says so, shows nothing else (no user lookup)."""
    line = first_line(exc)
    fragment = bool(request.headers.get("HX-Request"))  # the banner only, for htmx to swap in
    template = "taskdeck/partials/unavailable.html" if fragment else "taskdeck/unavailable.html"
    response = render(
        request, template, {"what": "database", "error": f"{type(exc).__name__}: {line}"}, status=503
    )
    response["Retry-After"] = "10"
    return response
