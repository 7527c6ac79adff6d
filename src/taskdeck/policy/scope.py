"""Scopes: the task names and queues a user (through their groups) or a token may see and act on.

An :class:`~taskdeck.models.AccessScope` row gives a group, or one user, the
runs whose task name matches one of its task patterns or whose queue matches
one of its queue patterns, and the queues matching its queue patterns. A
user's scope is the union of their rows and their groups' rows. No row at all
is no limit (the behaviour without scopes); a superuser has no limit either.

Patterns are fnmatch-style without character classes: ``*`` is any run of
characters, ``?`` one character, anything else itself (case-sensitive):
``billing.*``, ``billing:*`` (the ``namespace:task`` router's namespaces),
``reports_??``. They are checked when saved (:func:`validate_patterns`); one
stored some other way that does not pass is skipped (it grants nothing).

Every page, API operation and ``/metrics`` reads through the functions at the
end of this module, which filter in the database with lists of the matching
names and queues (an index each), never by pattern.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db.models import Q

from taskdeck.querysets import WORKERS_SHOWN

if TYPE_CHECKING:
    from django.http import HttpRequest

    from taskdeck.models import DeadLetter, TaskRun, Worker
    from taskdeck.querysets import DeadLetterQuerySet, TaskRunQuerySet

log = logging.getLogger(__name__)

#: Longest pattern: the name and queue columns' size.
PATTERN_LIMIT = 255
#: Distinct task names or queues a scope is matched against, per table (one index probe each).
KNOWN_LIMIT = 5000
_SPLIT = re.compile(r"[\s,]+")


def split_patterns(text: str) -> list[str]:
    """The patterns of a field: separated by commas, spaces or new lines."""
    return [p for p in _SPLIT.split(text or "") if p]


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used, or None."""
    if len(pattern) > PATTERN_LIMIT:
        return f"{pattern[:40]!r}… is longer than {PATTERN_LIMIT} characters"
    if "[" in pattern or "]" in pattern:
        return f"{pattern!r}: character classes ([…]) are not supported, use * and ?"
    bad = [c for c in pattern if unicodedata.category(c)[0] in "CZ"]
    if bad:
        return f"{pattern!r} contains {bad[0]!r}: no control, format or space characters"
    return None


def validate_patterns(text: str) -> None:
    """The model field's validator: every pattern usable, or a ValidationError naming each one that is not."""
    problems = [p for p in map(pattern_problem, split_patterns(text)) if p]
    if problems:
        raise ValidationError("; ".join(problems[:5]), code="bad_pattern")


def _regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        for pattern in patterns
    ]
    return re.compile("|".join(f"(?:{p})" for p in parts), re.DOTALL) if parts else None


@dataclass(frozen=True)
class Scope:
    """Task-name and queue patterns; ``limited=False`` is no limit (the patterns are then unused)."""

    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    limited: bool = True

    @classmethod
    def everything(cls) -> Scope:
        return cls(limited=False)

    @classmethod
    def nothing(cls) -> Scope:
        return cls()

    @cached_property
    def _tasks(self) -> re.Pattern[str] | None:
        return _regex(self.tasks)

    @cached_property
    def _queues(self) -> re.Pattern[str] | None:
        return _regex(self.queues)

    def allows_name(self, name: str | None) -> bool:
        """Whether the task name matches a task pattern (a queue pattern may still admit its runs)."""
        if not self.limited:
            return True
        return bool(self._tasks is not None and name is not None and self._tasks.fullmatch(name))

    def allows_queue(self, queue: str | None) -> bool:
        if not self.limited:
            return True
        return bool(self._queues is not None and queue is not None and self._queues.fullmatch(queue))

    def allows_run(self, name: str | None, queue: str | None) -> bool:
        return self.allows_name(name) or self.allows_queue(queue)

    def q(self, names: Iterable[str], queues: Iterable[str], name: str = "name", queue: str = "queue") -> Q:
        """The rows of these known ``names`` and ``queues`` this scope admits, as a filter."""
        if not self.limited:
            return Q()
        return Q(**{f"{name}__in": [n for n in names if self.allows_name(n)]}) | Q(
            **{f"{queue}__in": [q for q in queues if self.allows_queue(q)]}
        )

    def key(self) -> str:
        """Stable and short, for cache keys of what a scope sees."""
        if not self.limited:
            return "all"
        text = "\0".join(self.tasks) + "\1" + "\0".join(self.queues)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        if not self.limited:
            return "everything"
        parts = []
        if self.tasks:
            parts.append("tasks " + ", ".join(self.tasks))
        if self.queues:
            parts.append("queues " + ", ".join(self.queues))
        return "; ".join(parts) or "nothing"


def _usable(text: str, where: str) -> list[str]:
    out = []
    for pattern in split_patterns(text):
        problem = pattern_problem(pattern)
        if problem:
            log.warning("access scope %s: pattern skipped (it grants nothing): %s", where, problem)
        else:
            out.append(pattern)
    return out


def scope_for(user: Any) -> Scope:
    """What ``user`` may see: their rows and their groups' rows; none at all, or a superuser: everything."""
    from taskdeck.models import AccessScope

    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Scope.nothing()
    if user.is_superuser:
        return Scope.everything()
    cached = getattr(user, "_taskdeck_scope", None)
    if cached is not None:
        return cached
    mine = Q(user=user)
    if hasattr(user, "groups"):  # a custom user model may have no groups
        mine |= Q(group__in=user.groups.all())
    rows = list(AccessScope.objects.filter(mine))
    if not rows:
        scope = Scope.everything()
    else:
        tasks = [p for row in rows for p in _usable(row.tasks, str(row))]
        queues = [p for row in rows for p in _usable(row.queues, str(row))]
        scope = Scope(tuple(dict.fromkeys(tasks)), tuple(dict.fromkeys(queues)))
    user._taskdeck_scope = scope
    return scope


def token_scope(token: Any) -> Scope:
    """An ApiToken has its owner's scope; one without owner (or a settings token) has no limit."""
    owner = getattr(token, "owner", None)
    return scope_for(owner) if owner is not None else Scope.everything()


def scope_of(request: HttpRequest) -> Scope:
    """The scope of whoever makes ``request``: the API's token, else the session's user (cached on it)."""
    cached = getattr(request, "_taskdeck_scope", None)
    if cached is not None:
        return cached
    from taskdeck.policy.clients import SETTINGS_TOKEN

    auth = getattr(request, "auth", None)  # django-ninja: whom its authentication admitted
    if auth is SETTINGS_TOKEN:
        scope = Scope.everything()
    elif auth is not None and auth.__class__.__name__ == "ApiToken":
        scope = token_scope(auth)
    else:
        scope = scope_for(getattr(request, "user", None))
    request._taskdeck_scope = scope  # type: ignore[attr-defined]
    return scope


# --- What a scope sees: one place per table ----------------------------------------------------


def runs_for(request: HttpRequest) -> TaskRunQuerySet:
    """The task runs ``request``'s scope admits; every list, search, page and action starts here."""
    from taskdeck.models import TaskRun

    scope = scope_of(request)
    runs = TaskRun.objects.all()
    if not scope.limited:
        return runs
    names, queues = known_runs(request)
    # "": a run whose name or queue was not recorded (distinct_values leaves it out).
    return runs.filter(scope.q(["", *names], ["", *queues]))


def known_runs(request: HttpRequest) -> tuple[list[str], list[str]]:
    """The distinct task names and queues of the runs (one index probe each), once per request."""
    from taskdeck.models import TaskRun

    cached = getattr(request, "_taskdeck_known_runs", None)
    if cached is None:
        names = TaskRun.objects.distinct_values("name", limit=KNOWN_LIMIT)
        cached = (names, TaskRun.objects.distinct_values("queue", limit=KNOWN_LIMIT))
        request._taskdeck_known_runs = cached  # type: ignore[attr-defined]
    return cached


def hide_links_outside(request: HttpRequest, runs: Iterable[TaskRun]) -> None:
    """Blank the parent and root ids of ``runs`` that do not name runs of ``request``'s scope.

    The runs are in scope; the run that sent one, or its workflow's first
    run, may be another team's, whose id is not told (as a 404 does not tell
    it). One query for all of them. Call it on what is shown, after a
    workflow is read from them (that needs the ids).
    """
    if not scope_of(request).limited:
        return
    runs = list(runs)
    linked = {i for run in runs for i in (run.parent_id, run.root_id) if i and i != run.task_id}
    seen = set(runs_for(request).filter(task_id__in=linked).values_list("task_id", flat=True))
    for run in runs:
        if run.parent_id and run.parent_id not in seen:
            run.parent_id = ""
        if run.root_id and run.root_id != run.task_id and run.root_id not in seen:
            run.root_id = ""


#: Headers of a task message that name other runs (Celery's protocol 2).
LINK_HEADERS = ("parent_id", "root_id")


def hide_header_links_outside(request: HttpRequest, letter: DeadLetter) -> None:
    """Blank the parent and root ids in ``letter``'s headers that do not name runs of ``request``'s scope.

    The letter is in scope; the run that sent its message may be another
    team's, whose id is not told (as :func:`hide_links_outside` does for runs).
    """
    headers = letter.headers
    if not scope_of(request).limited or not isinstance(headers, dict):
        return
    linked = {
        v for k in LINK_HEADERS if isinstance(v := headers.get(k), str) and v and v != headers.get("id")
    }
    if not linked:
        return
    seen = set(runs_for(request).filter(task_id__in=linked).values_list("task_id", flat=True))
    letter.headers = {k: "" if k in LINK_HEADERS and v in linked - seen else v for k, v in headers.items()}


def workers_for(request: HttpRequest, limit: int = WORKERS_SHOWN) -> list[Worker]:
    """The first ``limit`` workers, online first (workers serve every team), with the numbers ``request``'s
    scope may see.

    For a limited scope, ``active`` counts the runs of the scope started on
    the worker now (its heartbeat's count is every team's), ``processed`` is
    None (the worker counts every team's runs, and counting the scope's
    would read all of them), and ``queues`` keeps the queues of the scope.
    """
    from django.db.models import Count

    from taskdeck.models import TaskState, Worker

    workers: list[Worker] = list(Worker.objects.shown(limit))
    scope = scope_of(request)
    if not scope.limited:
        return workers
    started = (
        runs_for(request)
        .filter(state=TaskState.STARTED, worker__in=[w.hostname for w in workers if w.online])
        .order_by()
        .values("worker")
        .annotate(n=Count("id"))
    )
    active = {row["worker"]: row["n"] for row in started}
    for worker in workers:
        worker.active = active.get(worker.hostname, 0)
        worker.processed = None  # type: ignore[assignment]
        if isinstance(worker.queues, list):
            worker.queues = [q for q in worker.queues if scope.allows_queue(q)]
    return workers


def names_in_scope(request: HttpRequest) -> Callable[[str], bool] | None:
    """For searches by task name (``search_page(keep_name=…)``): the names that can have runs in scope.

    None when any name can (no limit, or queue patterns, which admit runs of every name).
    """
    scope = scope_of(request)
    return scope.allows_name if scope.limited and not scope.queues else None


def rollups_q(scope: Scope) -> Q:
    """A filter of rollup and total rows (``name``, ``queue``): the names and queues ever counted."""
    if not scope.limited:
        return Q()
    from taskdeck.models import TaskTotal

    pairs = list(TaskTotal.objects.order_by().values_list("name", "queue").distinct()[:KNOWN_LIMIT])
    return scope.q({n for n, _ in pairs}, {q for _, q in pairs})


def dead_letters_for(request: HttpRequest) -> DeadLetterQuerySet:
    """Dead letters of a task name in scope, or sent to a queue in scope (its routing key).

    One without a task name (an event, a row, an undecodable message) is seen without limit only.
    """
    from taskdeck.models import DeadLetter

    scope = scope_of(request)
    letters = DeadLetter.objects.all()
    if not scope.limited:
        return letters
    names = DeadLetter.objects.order_by().exclude(task="").values_list("task", flat=True).distinct()
    keys = DeadLetter.objects.order_by().values_list("properties__routing_key", flat=True).distinct()
    queues = [k for k in keys if isinstance(k, str)]
    return letters.filter(
        scope.q(list(names[:KNOWN_LIMIT]), queues[:KNOWN_LIMIT], "task", "properties__routing_key")
    )


def audit_for(request: HttpRequest) -> Any:
    """Audit entries a scope sees: on its runs, queues, waiting messages and dead letters, and the
    user's own.

    Not another user's refusal for being outside their scope (:func:`~taskdeck.policy.refuse_outside`):
    its message names that user's scope, another team's task and queue patterns.
    """
    from taskdeck.models import AuditEntry

    scope = scope_of(request)
    entries = AuditEntry.objects.all()
    if not scope.limited:
        return entries
    from taskdeck.models import DeadLetter, QueueSample

    queues = [q for q in QueueSample.objects.distinct_values("queue") if scope.allows_queue(q)]
    mine = Q(user=request.user) if getattr(request.user, "pk", None) else Q(pk__in=[])
    letters = dead_letters_for(request).order_by("-id").values_list("pk", flat=True)[:KNOWN_LIMIT]
    # A letter requeued or deleted is gone: its entry says its task name and routing key.
    lettered = DeadLetter.objects.order_by().exclude(task="").values_list("task", flat=True).distinct()
    names = {*known_runs(request)[0], *lettered[:KNOWN_LIMIT]}
    gone = Q(detail__task__in=[n for n in names if scope.allows_name(n)]) | Q(detail__routing_key__in=queues)
    on_scope = (
        Q(target__in=runs_for(request).values("task_id"))
        | Q(target__in=queues)
        | Q(target__in=[f"dead letter {pk}" for pk in letters])
        | (Q(target__startswith="dead letter ") & gone)
    )
    if queues:  # "message <ref> on <queue>" (taskdeck.dashboard.actions)
        on_scope |= Q(target__regex=r"^message \S+ on (" + "|".join(map(re.escape, queues)) + ")$")
    return entries.filter(mine | (on_scope & ~Q(detail__has_key="scope")))


def queue_samples_for(request: HttpRequest) -> Any:
    """Queue samples of the queues ``request``'s scope admits."""
    from taskdeck.models import QueueSample

    scope = scope_of(request)
    samples = QueueSample.objects.all()
    if not scope.limited:
        return samples
    known = QueueSample.objects.distinct_values("queue", limit=KNOWN_LIMIT)
    return samples.filter(queue__in=[q for q in known if scope.allows_queue(q)])


def incidents_for(request: HttpRequest) -> Any:
    """Alert incidents whose subject is a queue of the scope, or a task pattern its names cover.

    The deployment's own (a worker offline, the recorder behind) are seen without limit only.
    """
    from taskdeck.models import AlertIncident

    scope = scope_of(request)
    incidents = AlertIncident.objects.all()
    if not scope.limited:
        return incidents
    subjects = AlertIncident.objects.order_by().values_list("subject", flat=True).distinct()[:KNOWN_LIMIT]
    mine = [s for s in subjects if s and (scope.allows_queue(s) or scope.allows_name(s))]
    return incidents.filter(subject__in=mine)
