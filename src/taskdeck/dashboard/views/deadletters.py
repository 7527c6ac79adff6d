"""The dead-letter store's pages: the list, one letter raw, and its requeue and delete buttons."""

from __future__ import annotations

import json

from celery import current_app
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse

from taskdeck import conf
from taskdeck.dashboard.access import action_view, dashboard_view, outside_scope
from taskdeck.dashboard.views import page
from taskdeck.models import DeadLetterKind
from taskdeck.policy import dead_letters_for, hide_header_links_outside, scope_of

#: Characters of a body shown on its page; the API gives it whole.
BODY_PREVIEW = 65536


@dashboard_view
def dead_letters(request: HttpRequest) -> HttpResponse:
    kind = request.GET.get("kind", "")
    rows = dead_letters_for(request).search(kind=kind if kind in DeadLetterKind.values else None)
    letters = rows.newest_first().defer("body", "headers", "properties")[: conf.dashboard()["PAGE_SIZE"]]
    context = {"letters": letters, "kinds": DeadLetterKind.choices, "kind": kind}
    return page(request, "taskdeck/dead_letters.html", context)


@dashboard_view
def dead_letter(request: HttpRequest, pk: int) -> HttpResponse:
    from taskdeck.guard import requeue_problem

    letter = get_object_or_404(dead_letters_for(request), pk=pk)
    requeue_refused = requeue_problem(current_app, letter)
    hide_header_links_outside(request, letter)  # shown, never saved
    body = None if letter.body is None else bytes(letter.body)
    text = None if body is None else body.decode("utf-8", "backslashreplace")
    context = {
        "letter": letter,
        "headers": json.dumps(letter.headers, indent=2, ensure_ascii=False),
        "properties": json.dumps(letter.properties, indent=2, ensure_ascii=False),
        "body": None if text is None else text[:BODY_PREVIEW],
        "body_cut": text is not None and len(text) > BODY_PREVIEW,
        "requeue_refused": requeue_refused,
    }
    return page(request, "taskdeck/dead_letter.html", context)


@action_view("deadletters")
def requeue(request: HttpRequest, pk: int) -> HttpResponse:
    from taskdeck.dashboard.views.commands import _actions, _say

    letter = dead_letters_for(request).filter(pk=pk).first()
    if letter is None:
        return _missing(request, "requeue", pk)
    outcome = _actions(request).requeue(letter)
    _say(request, outcome)
    if outcome.ok:
        return HttpResponseRedirect(reverse("taskdeck:dead-letters"))
    return HttpResponseRedirect(reverse("taskdeck:dead-letter", args=[pk]))


@action_view("deadletters")
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    from taskdeck.dashboard.views.commands import _actions, _say

    letter = dead_letters_for(request).filter(pk=pk).first()
    if letter is None:
        return _missing(request, "delete_letter", pk)
    _say(request, _actions(request).delete_letter(letter))
    return HttpResponseRedirect(reverse("taskdeck:dead-letters"))


def _missing(request: HttpRequest, action: str, pk: int) -> HttpResponse:
    if scope_of(request).limited:
        return outside_scope(request, action, f"dead letter {pk}")
    raise Http404(f"no dead letter {pk}")
