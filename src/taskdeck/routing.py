"""Task routing: a static table (exact, ``*`` glob, regex) and a namespace router.

Both are ordinary Celery routers and go in ``CELERY_TASK_ROUTES``. Celery
asks each router in turn and **the first one that returns a route wins**, so
a router must return ``None`` for names it does not handle.

Precedence inside a :class:`TaskRoutes` table is Celery's own (it wraps
``celery.app.routes.MapRoute``):

1. an exact name always wins over any pattern, wherever it is listed;
2. otherwise patterns are tried in the order they are listed and the first
   that matches wins, so list narrow patterns before broad ones;
3. a key is a glob only if it contains ``*``, matched with ``fnmatch``
   against the whole name (``*`` matches zero or more characters, dots
   included; ``?`` and ``[...]`` are special too); a compiled regex is tried with ``.match()``,
   anchored at the start only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from celery import current_app
from celery.app.routes import MapRoute

from taskdeck.lanes import lane_options

RouteKey = str | re.Pattern[str]


@dataclass(frozen=True)
class Match:
    """Which rule of a table routed a task name."""

    key: RouteKey
    kind: str  # "exact", "glob" or "regex"
    route: dict[str, Any]

    def describe(self) -> str:
        key = self.key.pattern if isinstance(self.key, re.Pattern) else self.key
        return f"{self.kind} '{key}'"


def _kind(key: RouteKey) -> str:
    if isinstance(key, re.Pattern):
        return "regex"
    return "glob" if "*" in key else "exact"


class TaskRoutes:
    """A static routing table whose values may name a priority lane.

    Values are what Celery accepts (a queue name or a dict of options) plus
    ``{"lane": "high"}``, which expands to the lane's queue and the broker's
    priority for it::

        TaskRoutes({
            "orders.tasks.charge_payment": {"lane": "high"},       # exact
            "reports.tasks.*": {"lane": "medium"},                 # glob
            re.compile(r"maintenance\\.tasks\\."): {"lane": "low"},  # regex
            "catalog.tasks.reindex": "default",
        })
    """

    def __init__(self, table: Mapping[RouteKey, str | Mapping[str, Any]]) -> None:
        self.table = dict(table)
        self._map = MapRoute(self.table)
        # Map each compiled pattern back to the key the user wrote.
        self._pattern_keys = {
            compiled: key
            for compiled, key in zip(
                self._map.patterns,
                [k for k in self.table if _kind(k) != "exact"],
                strict=True,
            )
        }

    def __iter__(self) -> Iterator[tuple[RouteKey, str | Mapping[str, Any]]]:
        return iter(self.table.items())

    def match(self, name: str) -> Match | None:
        """The rule that routes ``name``, following Celery's precedence."""
        if name in self._map.map:
            return Match(name, "exact", self._options(self._map.map[name]))
        for compiled, route in self._map.patterns.items():
            if compiled.match(name):
                key = self._pattern_keys[compiled]
                return Match(key, _kind(key), self._options(route))
        return None

    def __call__(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        options: Any = None,
        task: Any = None,
        **kw: Any,
    ) -> dict[str, Any] | None:
        found = self.match(name)
        if found is None:
            return None
        route = dict(found.route)
        lane = route.pop("lane", None)
        if lane is not None:
            app = task.app if task is not None else current_app
            route = {**lane_options(lane, app.conf.broker_url), **route}
        return route

    @staticmethod
    def _options(route: str | Mapping[str, Any]) -> dict[str, Any]:
        return {"queue": route} if isinstance(route, str) else dict(route)


class NamespaceRouter:
    """Send ``@shared_task(name="namespace:task")`` to the queue ``namespace``.

    Returns ``None`` for any other name so that the routers listed after it
    (the static table included) still apply. Returning a default queue here
    instead would hide every later route: Celery stops at the first router
    that answers.
    """

    def route_for_task(self, task: str, *args: Any, **kwargs: Any) -> dict[str, str] | None:
        namespace, sep, rest = task.partition(":")
        if not sep or not namespace or not rest:
            return None
        return {"queue": namespace}


def namespace_of(name: str) -> str | None:
    """The queue :class:`NamespaceRouter` sends ``name`` to, if any."""
    route = NamespaceRouter().route_for_task(name)
    return route["queue"] if route else None


@dataclass(frozen=True)
class Decision:
    """Where Celery sends a task name, and which rule decided it."""

    name: str
    queue: str
    rule: str


def decide(app: Any, name: str) -> Decision:
    """Route ``name`` the way ``apply_async`` would, and say which rule matched.

    The queue comes from Celery's own router (``app.amqp.router``); the rule
    is found by asking the configured routers in the same order.
    """
    options = app.amqp.router.route({}, name)
    queue = options["queue"]
    queue_name = getattr(queue, "name", queue)
    return Decision(name, queue_name, _rule_for(app, name))


def _rule_for(app: Any, name: str) -> str:
    from celery.utils.functional import maybe_evaluate

    for router in map(maybe_evaluate, app.amqp.routes):
        if isinstance(router, TaskRoutes):
            found = router.match(name)
            if found:
                return found.describe()
        elif isinstance(router, MapRoute):
            found = TaskRoutes(dict(router.map) | dict(router.patterns)).match(name)
            if found:
                return found.describe()
        elif isinstance(router, NamespaceRouter):
            if namespace_of(name):
                return "namespace router"
        else:
            target = getattr(router, "route_for_task", None)
            answer = target(name, (), {}) if target else router(name, (), {}, {}, task=None)
            if answer:
                return f"router {type(router).__name__}"
    return "default queue"
