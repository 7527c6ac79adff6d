"""The message browser: what waits in a queue (a page per priority sub-queue), one message, delete, move."""

from __future__ import annotations

import json

from celery import current_app
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from taskdeck import conf
from taskdeck.dashboard.access import action_view, dashboard_view, outside_scope
from taskdeck.dashboard.views import page
from taskdeck.errors import first_line
from taskdeck.monitor import messages
from taskdeck.monitor.queues import configured_queues
from taskdeck.policy import scope_of


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _broker_down(request: HttpRequest, exc: BaseException) -> HttpResponse:
    error = f"{type(exc).__name__}: {first_line(exc)}"
    response = render(request, "taskdeck/unavailable.html", {"what": "broker", "error": error}, status=503)
    response["Retry-After"] = "10"
    return response


@dashboard_view
def queue_messages(request: HttpRequest, queue: str) -> HttpResponse:
    if not scope_of(request).allows_queue(queue):  # a scoped user: the queues of its scope only
        raise Http404(f"no queue {queue!r} in your scope")
    priority = _int(request.GET.get("priority"))
    offset = _int(request.GET.get("offset")) or 0
    try:
        pages = messages.browse(current_app, queue, priority, offset, conf.dashboard()["PAGE_SIZE"])
    except messages.NotAQueue as exc:
        raise Http404(str(exc)) from exc
    except messages.BROKER_ERRORS as exc:
        return _broker_down(request, exc)
    context = {"queue": queue, "pages": pages, "priority": priority, "offset": offset}
    return page(request, "taskdeck/messages.html", context)


@dashboard_view
def message(request: HttpRequest, queue: str, ref: str) -> HttpResponse:
    scope = scope_of(request)
    if not scope.allows_queue(queue):
        raise Http404(f"no queue {queue!r} in your scope")
    try:
        found = messages.find(current_app, queue, ref)
    except messages.NotAQueue as exc:
        raise Http404(str(exc)) from exc
    except messages.BROKER_ERRORS as exc:
        return _broker_down(request, exc)
    if found is None:
        raise Http404(f"no message {ref!r} waiting on {queue!r}")
    declared = [
        q
        for q in configured_queues(current_app, conf.monitor()["QUEUES"])()
        if q != queue and scope.allows_queue(q)
    ]
    context = {
        "queue": queue,
        "m": found,
        "args": json.dumps(found.args, indent=2, ensure_ascii=False, default=str),
        "kwargs": json.dumps(found.kwargs, indent=2, ensure_ascii=False, default=str),
        "targets": declared,
    }
    return page(request, "taskdeck/message.html", context)


def _outside(request: HttpRequest, action: str, queue: str, ref: str, to: str | None) -> HttpResponse | None:
    """The scope check of an action on a message: both queues in scope, else an audited 404."""
    scope = scope_of(request)
    if scope.allows_queue(queue) and (to is None or scope.allows_queue(to)):
        return None
    return outside_scope(request, action, f"message {ref} on {queue}"[:255])


@action_view("messages")
def delete(request: HttpRequest, queue: str, ref: str) -> HttpResponse:
    from taskdeck.dashboard.views.commands import _actions, _say

    refused = _outside(request, "delete_message", queue, ref, None)
    if refused is not None:
        return refused
    _say(request, _actions(request).delete_message(queue, ref))
    return HttpResponseRedirect(reverse("taskdeck:messages", args=[queue]))


@action_view("messages")
def move(request: HttpRequest, queue: str, ref: str) -> HttpResponse:
    from taskdeck.dashboard.views.commands import _actions, _say

    to = request.POST.get("to", "")
    refused = _outside(request, "move_message", queue, ref, to)
    if refused is not None:
        return refused
    _say(request, _actions(request).move_message(queue, ref, to))
    return HttpResponseRedirect(reverse("taskdeck:messages", args=[queue]))
