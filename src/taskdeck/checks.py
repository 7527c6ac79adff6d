"""Django system checks: misconfiguration reported at startup with stable IDs.

``taskdeck.E0xx`` are errors (``manage.py check`` fails); ``taskdeck.W0xx``
are warnings. Each message names the setting and the value at fault; each
hint says what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from taskdeck import conf
from taskdeck.routing import NamespaceRouter, TaskRoutes, namespace_of

WORKER_KEYS = {"queues", "concurrency", "pool", "prefetch_multiplier"}


def _celery_app() -> Any:
    from celery import current_app

    return current_app


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    messages += _check_lanes()
    messages += _check_workers()
    messages += _check_celery_names()
    messages += _check_routes()
    return messages


def _check_lanes() -> list[CheckMessage]:
    user = getattr(settings, "TASKDECK", None)
    lanes = user.get("LANES", conf.DEFAULTS["LANES"]) if isinstance(user, Mapping) else conf.DEFAULTS["LANES"]
    if not conf.lanes_ok(lanes):
        return [
            Error(
                f"TASKDECK['LANES'] must map lane names to queue names, got {lanes!r}.",
                hint="Use e.g. {'high': 'high_priority', 'medium': 'medium_priority', "
                "'low': 'low_priority'}, highest first.",
                id="taskdeck.E003",
            )
        ]
    return []


def _check_workers() -> list[CheckMessage]:
    """``TASKDECK["WORKERS"]`` as written: each group's keys and the type of each value.

    Read from the settings, not from :func:`conf.get` (which leaves out what is
    not a dict), so that a wrong value is named here instead of becoming a
    wrong ``celery worker`` command line (``"queues": "default"`` was
    ``-Q d,e,f,a,u,l,t``) or a worker that fails at every restart.
    """
    user = getattr(settings, "TASKDECK", None)
    groups = user.get("WORKERS", {}) if isinstance(user, Mapping) else {}
    if not isinstance(groups, Mapping):
        return [_worker_error(f"TASKDECK['WORKERS'] must be a dict of worker groups, got {groups!r:.80}.")]
    messages: list[CheckMessage] = []
    for name, group in groups.items():
        where = f"TASKDECK['WORKERS'][{name!r}]"
        if not isinstance(group, Mapping):
            messages.append(
                _worker_error(f"{where} must be a dict, got {group!r:.80}: no worker starts for it.")
            )
            continue
        unknown = set(group) - WORKER_KEYS
        if unknown:
            messages.append(
                _worker_error(f"{where} has unknown keys: {', '.join(sorted(map(str, unknown)))}.")
            )
        for key, must in conf.worker_group_problems(group):
            value = group.get(key, conf.WORKER_DEFAULTS[key]) if key else group
            messages.append(
                _worker_error(f"{where}[{key!r}] must be {must}, got {value!r:.80}: no worker starts for it.")
            )
    return messages


def _worker_error(msg: str, hint: str | None = None) -> Error:
    return Error(
        msg,
        hint=hint
        or f"A worker group is {{'queues': [...], 'concurrency': 2, 'pool': 'prefork', "
        f"'prefetch_multiplier': 1}}; allowed keys: {', '.join(sorted(WORKER_KEYS))}.",
        id="taskdeck.E006",
    )


def _check_celery_names() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if hasattr(settings, "CELERY_QUEUES"):
        messages.append(
            Warning(
                "CELERY_QUEUES is an old-style name that Celery ignores under the CELERY "
                "namespace: these queues are not declared.",
                hint="Rename it to CELERY_TASK_QUEUES.",
                id="taskdeck.W005",
            )
        )
    accept = getattr(settings, "CELERY_ACCEPT_CONTENT", None)
    if accept is not None and any("pickle" in str(c) for c in accept):
        messages.append(
            Warning(
                f"CELERY_ACCEPT_CONTENT = {accept!r} lets workers unpickle messages: anyone "
                "who can publish to the broker can run code on the workers.",
                hint="Set CELERY_ACCEPT_CONTENT = ['application/json'].",
                id="taskdeck.W004",
            )
        )
    # The Celery app's value: the preset's when the settings leave it out.
    default = _celery_app().conf.task_default_queue
    if default != conf.get()["DEFAULT_QUEUE"]:
        messages.append(
            Error(
                f"CELERY_TASK_DEFAULT_QUEUE is {default!r} but TASKDECK['DEFAULT_QUEUE'] is "
                f"{conf.get()['DEFAULT_QUEUE']!r}.",
                hint="Name the default queue once and use it for both settings.",
                id="taskdeck.E004",
            )
        )
    return messages


def _routers() -> Iterator[tuple[str, Any]]:
    """(label, router) for each entry of CELERY_TASK_ROUTES, as written in settings."""
    routes = getattr(settings, "CELERY_TASK_ROUTES", None)
    if routes is None:
        return
    entries = routes if isinstance(routes, (list, tuple)) else [routes]
    for index, entry in enumerate(entries):
        yield f"CELERY_TASK_ROUTES[{index}]", entry


def _check_routes() -> list[CheckMessage]:
    from django.utils.module_loading import import_string

    messages: list[CheckMessage] = []
    lanes = conf.get()["LANES"]
    if not isinstance(lanes, Mapping):
        lanes = None  # taskdeck.E003 reports it; lane routes cannot be checked against it
    routed: list[tuple[str, str]] = []  # (where, queue)
    namespace_router = False
    for where, entry in _routers():
        if isinstance(entry, str):
            try:
                entry = import_string(entry)
            except ImportError as exc:
                messages.append(
                    Error(
                        f"{where} = {entry!r} cannot be imported: {exc}.",
                        hint="Give the dotted path of a router class or function.",
                        id="taskdeck.E001",
                    )
                )
                continue
            if isinstance(entry, type):
                entry = entry()
        if isinstance(entry, NamespaceRouter):
            namespace_router = True
            continue
        if isinstance(entry, TaskRoutes):
            table: Mapping[Any, Any] = entry.table
        elif isinstance(entry, Mapping):
            table = entry
        elif callable(entry) or hasattr(entry, "route_for_task"):
            continue  # custom router: its queues cannot be known in advance
        else:
            messages.append(
                Error(
                    f"{where} is a {type(entry).__name__}; Celery expects a mapping, a router "
                    "or a dotted path to one.",
                    hint="See docs/routing.md.",
                    id="taskdeck.E001",
                )
            )
            continue
        for key, value in table.items():
            label = f"{where}[{key.pattern if isinstance(key, re.Pattern) else repr(key)}]"
            queue, problem = _route_queue(value, lanes)
            if problem:
                messages.append(Error(f"{label}: {problem}", hint=_ROUTE_HINT, id="taskdeck.E002"))
            elif queue:
                routed.append((label, queue))
    return messages + _check_consumed(routed, namespace_router)


_ROUTE_HINT = (
    "A route is a queue name, a dict with 'queue', or {'lane': name} with a lane from TASKDECK['LANES']."
)


def _route_queue(value: Any, lanes: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    if isinstance(value, str):
        return (value, None) if value else (None, "the queue name is empty.")
    if not isinstance(value, Mapping):
        return None, f"{value!r} is not a queue name or a dict of options."
    if "lane" in value:
        if lanes is None:
            return None, None
        lane = value["lane"]
        if lane not in lanes:
            return None, f"unknown lane {lane!r}; TASKDECK['LANES'] defines {', '.join(lanes)}."
        return value.get("queue", lanes[lane]), None
    queue = value.get("queue")
    if queue is None:
        return None, None  # e.g. {'exchange': ..., 'routing_key': ...}: not a queue route
    return getattr(queue, "name", queue), None


def _check_consumed(routed: list[tuple[str, str]], namespace_router: bool) -> list[CheckMessage]:
    workers = conf.get()["WORKERS"]
    if not workers:
        return []  # workers are run by other means: nothing to compare against
    consumed = {q for group in workers.values() for q in group.get("queues") or ()}
    hint = "Add the queue to a group in TASKDECK['WORKERS'], or route the task elsewhere."
    messages: list[CheckMessage] = [
        Warning(
            f"{label} routes to queue {queue!r}, which no worker group in "
            "TASKDECK['WORKERS'] consumes: its tasks would wait forever.",
            hint=hint,
            id="taskdeck.W001",
        )
        for label, queue in routed
        if queue not in consumed
    ]
    if namespace_router:
        from django.utils.module_loading import autodiscover_modules

        # What Celery's autodiscovery imports; not app.loader.import_default_modules(),
        # whose Django fix-up runs the system checks again.
        autodiscover_modules("tasks")
        for name in sorted(_celery_app().tasks):
            queue = namespace_of(name)
            if queue and queue not in consumed:
                messages.append(
                    Warning(
                        f"task {name!r} is routed by NamespaceRouter to queue {queue!r}, which "
                        "no worker group in TASKDECK['WORKERS'] consumes.",
                        hint=hint,
                        id="taskdeck.W002",
                    )
                )
    default = conf.get()["DEFAULT_QUEUE"]
    if default not in consumed:
        messages.append(
            Warning(
                f"the default queue {default!r} is consumed by no worker group in "
                "TASKDECK['WORKERS']: every task without a route would wait forever.",
                hint=hint,
                id="taskdeck.W003",
            )
        )
    return messages
