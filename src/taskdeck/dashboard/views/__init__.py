"""The dashboard's pages: one module per area, each view thin over the monitor's querysets.

Every page is server-rendered; its live part is the same view asked for
``?fragment=<name>`` by htmx every ``TASKDECK["DASHBOARD"]["REFRESH"]``
seconds (:func:`page`). Charts read the JSON API (``/api/series``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from taskdeck import conf
from taskdeck.policy import abilities, scope_of


def page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    fragments: dict[str, str] | None = None,
    status: int = 200,
) -> TemplateResponse:
    """``template`` with the dashboard's common context, or one of its ``fragments`` for htmx."""
    can = abilities(request.user, scope_of(request))
    settings = conf.dashboard()
    full = {
        "can": can,
        "readonly": not any(can.values()),
        "refresh": settings["REFRESH"],
        "now": timezone.now(),
        "admin_url": _admin_url(),
        **context,
    }
    fragment = request.GET.get("fragment")
    if fragment and fragments and fragment in fragments:
        return TemplateResponse(request, fragments[fragment], full, status=status)
    return TemplateResponse(request, template, full, status=status)


def _admin_url() -> str | None:
    try:
        return reverse("admin:index")
    except NoReverseMatch:  # a project without django.contrib.admin
        return None
