"""The POST endpoints behind the dashboard's buttons, and the confirmation of bulk retry.

Each one: permission and CSRF (:func:`action_view`), one call on
:class:`~taskdeck.dashboard.actions.Actions` (which writes the audit log),
the outcome as a message, and a redirect back (post/redirect/get).
"""

from __future__ import annotations

from celery import current_app
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from taskdeck import conf
from taskdeck.dashboard.access import action_view, dashboard_view, outside_scope
from taskdeck.dashboard.actions import Actions, Outcome
from taskdeck.dashboard.views import page
from taskdeck.dashboard.views.tasks import SINCE, failure_group_runs
from taskdeck.models import TaskRun
from taskdeck.policy import runs_for, scope_of


def _actions(request: HttpRequest) -> Actions:
    return Actions(
        current_app,
        request.user,
        remote_addr=request.META.get("REMOTE_ADDR") or None,
        timeout=conf.dashboard()["CONTROL_TIMEOUT"],
    )


def _back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure())
    return HttpResponseRedirect(target if target and safe else default)


def _say(request: HttpRequest, outcome: Outcome) -> None:
    level = messages.SUCCESS if outcome.ok else messages.ERROR
    messages.add_message(request, level, outcome.message, fail_silently=True)


def _run_in_scope(request: HttpRequest, action: str, task_id: str) -> TaskRun | HttpResponse:
    """The run to act on; outside the user's scope it is not found (404), and the attempt audited."""
    run = runs_for(request).filter(task_id=task_id).first()
    if run is not None:
        return run
    if scope_of(request).limited:
        return outside_scope(request, action, task_id)
    raise Http404(f"no task {task_id!r} was recorded")


def _whole_fleet(request: HttpRequest, action: str, hostname: str) -> HttpResponse | None:
    """Workers serve every queue: a user whose scope is limited is refused (403, audited)."""
    scope = scope_of(request)
    if not scope.limited:
        return None
    from taskdeck.policy import audit_refusal

    user = request.user.get_username()
    message = f"{action} refused: {user}'s access is limited ({scope.describe()}); workers serve every queue"
    audit_refusal(request, action, hostname, message, scope=scope.describe())
    needs = "access to every queue (no access scope): a worker serves them all"
    return render(request, "taskdeck/denied.html", {"needs": needs, "action": action}, status=403)


@action_view("retry")
def retry(request: HttpRequest, task_id: str) -> HttpResponse:
    run = _run_in_scope(request, "retry", task_id)
    if isinstance(run, HttpResponse):
        return run
    outcome = _actions(request).retry(run)
    _say(request, outcome)
    if outcome.ok and request.POST.get("follow"):
        return HttpResponseRedirect(reverse("taskdeck:task", args=[outcome.detail["task_id"]]))
    return _back(request, reverse("taskdeck:task", args=[task_id]))


@action_view("revoke")
def revoke(request: HttpRequest, task_id: str) -> HttpResponse:
    run = _run_in_scope(request, "revoke", task_id)
    if isinstance(run, HttpResponse):
        return run
    _say(request, _actions(request).revoke(run, terminate=request.POST.get("terminate") == "1"))
    return _back(request, reverse("taskdeck:task", args=[task_id]))


@action_view("purge")
def purge(request: HttpRequest, name: str) -> HttpResponse:
    if not scope_of(request).allows_queue(name):
        return outside_scope(request, "purge", name)
    _say(request, _actions(request).purge(name))
    return HttpResponseRedirect(reverse("taskdeck:queues"))


@action_view("control")
def pool(request: HttpRequest, hostname: str) -> HttpResponse:
    refused = _whole_fleet(request, "control", hostname)
    if refused is not None:
        return refused
    try:
        delta = int(request.POST.get("delta", "0"))
    except ValueError:
        delta = 0
    if delta == 0 or abs(delta) > 16:
        messages.error(request, "pool change must be between -16 and 16, not 0", fail_silently=True)
    else:
        _say(request, _actions(request).resize_pool(hostname, delta))
    return HttpResponseRedirect(reverse("taskdeck:workers"))


@action_view("control")
def shutdown(request: HttpRequest, hostname: str) -> HttpResponse:
    refused = _whole_fleet(request, "control", hostname)
    if refused is not None:
        return refused
    _say(request, _actions(request).shutdown(hostname))
    return HttpResponseRedirect(reverse("taskdeck:workers"))


@dashboard_view
def retry_group_confirm(request: HttpRequest) -> HttpResponse:
    """A dry run of "retry all": how many runs, which ones, before anything is sent."""
    get = request.GET
    limit = conf.dashboard()["BULK_RETRY_LIMIT"]
    since = get.get("since", "24h") if get.get("since") in SINCE else "24h"
    runs = failure_group_runs(request, since, get.get("name", ""), get.get("exc", ""), limit)
    context = {"runs": runs, "name": get.get("name", ""), "exc": get.get("exc", ""), "since": since}
    context["limit"] = limit
    return page(request, "taskdeck/confirm_retry.html", context)


@action_view("retry")
def retry_group(request: HttpRequest) -> HttpResponse:
    post = request.POST
    limit = conf.dashboard()["BULK_RETRY_LIMIT"]
    since = post.get("since", "24h") if post.get("since") in SINCE else "24h"
    try:
        runs = failure_group_runs(request, since, post.get("name", ""), post.get("exc", ""), limit)
    except Http404:
        return outside_scope(request, "retry", post.get("name", ""))
    sent, errors = _actions(request).retry_many(runs)
    if sent:
        messages.success(request, f"retried {sent} run(s) of {post.get('name')}", fail_silently=True)
    for error in errors[:5]:
        messages.error(request, error, fail_silently=True)
    if len(errors) > 5:
        more = f"… and {len(errors) - 5} more not retried (see the audit log)"
        messages.error(request, more, fail_silently=True)
    return HttpResponseRedirect(reverse("taskdeck:failures") + f"?since={since}")
