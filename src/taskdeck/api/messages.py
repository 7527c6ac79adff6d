"""Waiting messages of a queue: list them, read one, delete or move one (``/api/queues/<name>/messages``).

Reading needs what every endpoint needs; deleting and moving need a user
with ``taskdeck.manage_messages`` and the session's CSRF, and each attempt,
refused or not, is in the audit log. A scoped user sees and acts on the
messages of the queues of its scope only (as for purge); a move needs the
destination in scope too. Anything else is a 404.
"""

from __future__ import annotations

from celery import current_app
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Query, Router

from taskdeck.api import schemas
from taskdeck.api.auth import DashboardSession
from taskdeck.errors import first_line
from taskdeck.monitor import messages
from taskdeck.policy import scope_of

router = Router(tags=["messages"])


@router.get(
    "/queues/{path:name}/messages",
    response=schemas.MessagesOut,
    summary="Waiting messages of a queue, oldest first, per priority sub-queue (a page of each)",
)
def list_messages(
    request: HttpRequest, name: str, priority: int | None = None, offset: int = 0, limit: int = 50
):
    if not scope_of(request).allows_queue(name):
        raise Http404(f"no queue {name!r} in your scope")
    try:
        pages = messages.browse(current_app, name, priority, offset, limit)
    except messages.NotAQueue as exc:
        raise Http404(str(exc)) from exc
    except messages.BROKER_ERRORS as exc:
        return _broker_down(request, exc)
    return {"queue": name, "sub_queues": pages}


@router.get("/queues/{path:name}/messages/{ref}", response=schemas.WaitingOut, summary="One waiting message")
def get_message(request: HttpRequest, name: str, ref: str):
    if not scope_of(request).allows_queue(name):
        raise Http404(f"no queue {name!r} in your scope")
    try:
        found = messages.find(current_app, name, ref)
    except messages.NotAQueue as exc:
        raise Http404(str(exc)) from exc
    except messages.BROKER_ERRORS as exc:
        return _broker_down(request, exc)
    if found is None:
        raise Http404(f"no message {ref!r} waiting on {name!r}")
    return found


@router.delete(
    "/queues/{path:name}/messages/{ref}",
    response={200: schemas.ActionOut, 409: schemas.ActionOut},
    auth=[DashboardSession()],
    summary="Delete one waiting message (atomic: a worker that took it first wins)",
)
def delete_message(request: HttpRequest, name: str, ref: str):
    return _act(request, name, ref, None, move=False)


@router.post(
    "/queues/{path:name}/messages/{ref}/move",
    response={200: schemas.ActionOut, 409: schemas.ActionOut},
    auth=[DashboardSession()],
    summary="Move one waiting message to another declared queue (?to=), in one step on the broker",
)
def move_message(request: HttpRequest, name: str, ref: str, to: str = Query("", max_length=255)):
    return _act(request, name, ref, to, move=True)


def _broker_down(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The broker does not answer: 503 naming the error, not a 500."""
    from taskdeck.api import api

    detail = f"broker unavailable: {type(exc).__name__}: {first_line(exc)}"
    response = api.create_response(request, {"detail": detail}, status=503)
    response["Retry-After"] = "10"
    return response


def _act(request: HttpRequest, queue: str, ref: str, to: str | None, move: bool) -> HttpResponse:
    from taskdeck.api import api
    from taskdeck.dashboard.actions import Actions
    from taskdeck.policy import PERMISSIONS, audit_refusal, refuse_outside

    action = "move_message" if move else "delete_message"
    target = f"message {ref} on {queue}"[:255]
    permission = PERMISSIONS["messages"]
    if not request.user.has_perm(permission):
        message = f"{action} refused: {request.user.get_username()} lacks the permission {permission!r}"
        audit_refusal(request, action, target, message, permission=permission)
        needs = f"needs the permission {permission!r}"
        return api.create_response(request, {"ok": False, "message": needs, "detail": {}}, status=403)
    scope = scope_of(request)
    if not scope.allows_queue(queue) or (move and not scope.allows_queue(to)):
        refuse_outside(request, action, target)
        return api.create_response(request, {"detail": "Not Found"}, status=404)
    actions = Actions(current_app, request.user, remote_addr=request.META.get("REMOTE_ADDR") or None)
    outcome = actions.move_message(queue, ref, to or "") if move else actions.delete_message(queue, ref)
    body = {"ok": outcome.ok, "message": outcome.message, "detail": outcome.detail}
    return api.create_response(request, body, status=200 if outcome.ok else 409)
