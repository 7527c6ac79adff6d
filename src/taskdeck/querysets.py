"""Queries of the monitor's tables; the API, /metrics and the terminal view call these."""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connections, models
from django.db.models import Case, Count, F, Max, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, Left, Length, StrIndex
from django.utils import timezone

if TYPE_CHECKING:
    from taskdeck.models import Rollup

_R = TypeVar("_R", bound="Rollup")

FINAL = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")
#: search_page merges at most this many keyset pages (state x name pairs); past it, one query.
MAX_MERGED_PAGES = 64
#: Most workers a page, the API's list or the terminal shows (online first, then by hostname): one
#: ``worker.multi`` of 20,000 made-up hostnames made the workers page 12.4 MB and 2.9 s.
WORKERS_SHOWN = 500
#: Fewest characters of a search taken as the start of a task id (4 hex digits: 1 run in 65,536).
ID_PREFIX_MIN = 4


class PruneMixin:
    def prune(self: Any, batch: int, max_batches: int = 50, **filters: Any) -> int:
        """Delete rows matching ``filters`` in batches of ``batch`` primary keys; returns the count."""
        deleted = 0
        for _ in range(max_batches):
            pks = list(self.filter(**filters).values_list("pk", flat=True)[:batch])
            if not pks:
                break
            deleted += self.model.objects.filter(pk__in=pks).delete()[0]
        return deleted


class DistinctMixin:
    def distinct_values(self: Any, column: str, limit: int = 1000) -> list[str]:
        """The distinct non-empty values of an indexed column, in order: one index probe per value.

        A loose index scan written as a recursive query (PostgreSQL and SQLite
        both run it): ``SELECT DISTINCT`` would read every row of a table that
        holds a million runs to find a dozen task names.
        """
        conn = connections[self.db]
        quote = conn.ops.quote_name
        table = quote(self.model._meta.db_table)
        col = quote(self.model._meta.get_field(column).column)
        sql = (
            f"WITH RECURSIVE v(x, n) AS ("
            f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > %s), 1"
            f" UNION ALL"
            f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > v.x), v.n + 1"
            f" FROM v WHERE v.x IS NOT NULL AND v.n < %s"
            f") SELECT x FROM v WHERE x IS NOT NULL"
        )
        with conn.cursor() as cursor:
            cursor.execute(sql, ["", limit])
            return [row[0] for row in cursor.fetchall()]


class TaskRunQuerySet(DistinctMixin, PruneMixin, models.QuerySet):
    def search(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        worker: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        q: str | None = None,
        id_prefix: str | None = None,
    ) -> TaskRunQuerySet:
        qs = self
        if state:
            states = [s.strip().upper() for s in state.split(",")]
            qs = qs.filter(state__in=states)
            if "SUCCESS" not in states and connections[self.db].vendor == "sqlite":
                # The state index's condition, said for SQLite to read it
                # (PostgreSQL infers it, and would misjudge the rows of both).
                qs = qs.exclude(state="SUCCESS")
        if name:
            qs = qs.filter(name=name)
        if queue:
            qs = qs.filter(queue=queue)
        if worker:
            qs = qs.filter(worker=worker)
        if since:
            qs = qs.filter(first_seen_at__gte=since)
        if until:
            qs = qs.filter(first_seen_at__lt=until)
        if q:
            # An id, else the names containing q: an OR of both, or a LIKE
            # over the name column, would read every row when nothing matches.
            q = q.strip()
            by_id = self.is_task_id(q)
            qs = qs.filter(task_id=q) if by_id else qs.filter(name__in=self.names_containing(q))
        if id_prefix:
            qs = qs.filter(task_id__startswith=id_prefix)
            if connections[self.db].vendor == "sqlite":
                # SQLite's LIKE ignores case and no index serves it; the range
                # on the unique index finds the same ids (case-sensitive, as on
                # PostgreSQL, whose varchar_pattern_ops index serves the LIKE).
                qs = qs.filter(task_id__gte=id_prefix, task_id__lt=_next_prefix(id_prefix))
        return qs

    def is_task_id(self, text: str) -> bool:
        """Whether ``text`` is the id of a run of this queryset (one of an access scope's runs).

        Asked of every run instead, another team's id would answer with no run where
        an id that is not one finds the runs whose id starts with it: whether it exists.
        """
        return bool(self.filter(task_id=text).exists())

    def names_containing(self, text: str) -> list[str]:
        needle = text.strip().casefold()
        return [n for n in self.distinct_values("name") if needle in n.casefold()]

    def search_page(
        self, after: int | None, limit: int, defer: Sequence[str] = (), **filters: Any
    ) -> list[Any]:
        """:meth:`search` then :meth:`page`, with several states or names paged one by one and merged.

        ``state IN (a, b) ORDER BY id DESC LIMIT n`` makes SQLite read every
        row of both states through the (state, id) index and sort them (a
        second at a million runs); a keyset page per value, merged, reads at
        most ``limit`` rows of each. A search ``q`` that is not a task id is
        such a list of names. ``defer``: columns the rows are read without.

        ``keep_name``: a predicate a name must pass to be searched
        (:func:`taskdeck.policy.scope.names_in_scope`), for a queryset limited to
        the runs of the names it admits. The pages of those names are read from
        every run, without this queryset's own filter: beside ``name = X``, a
        filter on the names made PostgreSQL expect a few rows and read every run
        of the name to sort them (1,836 rows for a page of 51 at 100,000 runs).
        """
        scoped = self.defer(*defer)
        states = [s.strip().upper() for s in (filters.pop("state", None) or "").split(",") if s.strip()]
        names: list[str | None] = [filters.pop("name", None) or None]
        keep = filters.pop("keep_name", None)
        q = (filters.pop("q", None) or "").strip()
        prefix = None
        if q and self.is_task_id(q):
            filters["q"] = q
        elif q:
            # The runs whose id starts with q, and those whose name contains it.
            prefix = q if len(q) >= ID_PREFIX_MIN else None
            by_id = scoped.search(state=",".join(states) or None, name=names[0], id_prefix=prefix, **filters)
            names = [n for n in self.names_containing(q) if names == [None] or n in names]
            if not names:
                return by_id.page(after, limit) if prefix else []
        runs = scoped
        if keep is not None and names != [None]:
            # A name with no run in this queryset (outside an access scope) would be a page
            # that reads every run of that name to find none.
            names = [n for n in names if n is not None and keep(n)]
            if not names:
                return by_id.page(after, limit) if prefix else []
            # Every run of a name kept is in this queryset: read from every run.
            runs = type(self)(model=self.model, using=self.db).defer(*defer)
        combos = [(s, n) for s in dict.fromkeys(states or [None]) for n in names]
        if len(combos) > MAX_MERGED_PAGES:
            # One query per pair would be thousands (every state by hundreds of
            # names): one query over all of them costs one sort instead.
            combined = runs.search(state=",".join(states) or None, **filters)
            if names != [None]:
                combined = combined.filter(name__in=names)
            pages = [combined.page(after, limit)]
        else:
            pages = [runs._one_page(after, limit, s, n, filters) for s, n in combos]
        if prefix:
            pages.append(by_id.page(after, limit))
        if len(pages) == 1:
            return pages[0]
        merged = heapq.merge(*pages, key=lambda run: -run.id)
        return list({run.id: run for run in merged}.values())[:limit]

    def _one_page(
        self, after: int | None, limit: int, state: str | None, name: str | None, filters: dict[str, Any]
    ) -> list[Any]:
        """The page of one state and one name (either may be None) with ``filters``."""
        given = {k: v for k, v in filters.items() if v not in (None, "")}
        if name is not None:
            given["name"] = name
        if state is None and len(given) == 1 and not self.query.where:
            # One value of one column, nothing else (no state, time, search or access scope:
            # with one, walking the value's runs would read them all to find those).
            ((column, value),) = given.items()
            if column in INDEX_WALKS and isinstance(value, str):
                return self.page(after, limit, (column, value))
        return self.search(state=state, name=name, **filters).page(after, limit)

    def page(self, after: int | None, limit: int, by: tuple[str, str] | None = None) -> list[Any]:
        """Newest first, keyset on the primary key: ``after`` is the last id of the previous page.

        ``by``: (column, value), the runs whose column is that value, read
        from the column's ``(column, -id)`` index. It is said as a range,
        ``column >= value AND column <= value ORDER BY column, id DESC``, which
        only that index returns in order: said ``column = value ORDER BY id
        DESC``, PostgreSQL, expecting the value's runs spread over the table,
        walks the newest runs by id until it has a page, through every run
        newer than the value's last one (a worker retired, a task renamed or a
        queue dropped five days ago: 714,559 runs and 230-270 ms at a million
        runs, docs/benchmarks.md).
        """
        qs = self
        order = ["-id"]
        if by is not None:
            column, value = by
            qs = qs.filter(**{f"{column}__gte": value, f"{column}__lte": value})
            order = [column, "-id"]
        if after is not None:
            qs = qs.filter(id__lt=after)
        return list(qs.order_by(*order)[:limit])

    def workflow(self, run: Any, limit: int = 500) -> dict[str, list[Any]]:
        """Parent, children, group siblings and the whole tree of ``run``'s root.

        On a queryset of :meth:`briefly`, the runs read are :class:`Row` rows.
        """
        parent = _rows(self.filter(task_id=run.parent_id)) if run.parent_id else []
        children = self.workflow_runs("parent_id", [run.task_id], limit)
        group = self.workflow_runs("group_id", [run.group_id], limit) if run.group_id else []
        root_id = run.root_id or run.task_id
        tree = _merged([_rows(self.filter(task_id=root_id)), self.workflow_runs("root_id", [root_id], limit)])
        return {"parent": parent, "children": children, "group": group, "tree": tree[:limit]}

    def workflow_runs(self, column: str, values: Any, limit: int) -> list[Any]:
        """The first ``limit`` runs (oldest first) whose parent, root or group id is one of ``values``.

        Says what the partial index of ``column`` leaves out (no parent, no
        group, its own root), so PostgreSQL and SQLite read that small index in
        id order instead of the run table: an ``OR`` of the columns, or a
        ``LIMIT`` ordered by id the planner expects to meet early, read a
        third of a million runs for a group sent a day ago.
        """
        others = F("task_id") if column == "root_id" else Value("")
        return _rows(
            self.filter(**{f"{column}__in": values}).exclude(**{column: others}).order_by("id")[:limit]
        )

    def briefly(self, *fields: str) -> TaskRunQuerySet:
        """The runs as ``fields`` and the id alone, each a :class:`Row` (:meth:`workflow`, :meth:`graph`).

        A model instance per run, with the other columns deferred, cost half
        of ``GET api/tasks/<id>`` for a run of a 2,000-run group (its 1,000
        workflow runs): Django builds each from every column, deferred or not.
        """
        return self.values(*dict.fromkeys((*fields, "id")))  # type: ignore[return-value]

    def graph(self, run: Any, limit: int = 500, rounds: int = 8) -> list[Any]:
        """Every run connected to ``run`` (same root, same group, parent or child), oldest first.

        Wider than :meth:`workflow`'s tree: a chord's header tasks each have a
        root of their own and meet only through their group id, and its
        callback's root is whichever header task finished last.
        """
        seen = {run.task_id: run}
        frontier = [run]
        for _ in range(rounds):
            ids = {r.task_id for r in frontier}
            roots = {r.root_id for r in frontier if r.root_id} | ids
            parents = {r.parent_id for r in frontier if r.parent_id}
            groups = {r.group_id for r in frontier if r.group_id}
            pages = [
                _rows(self.filter(task_id__in=roots | parents).order_by("id")[:limit]),
                self.workflow_runs("root_id", roots, limit),
                self.workflow_runs("parent_id", ids, limit),
            ]
            if groups:
                pages.append(self.workflow_runs("group_id", groups, limit))
            found = _merged(pages)[:limit]
            frontier = [r for r in found if r.task_id not in seen]
            seen.update((r.task_id, r) for r in frontier)
            if not frontier or len(seen) >= limit:
                break
        return sorted(seen.values(), key=lambda r: r.id)[:limit]

    def in_state_by_queue(
        self, state: str, queue: str | None = None, task: str | None = None
    ) -> dict[str, int]:
        """``{queue: runs}`` of the runs in ``state`` now; ``task`` is a glob of task names."""
        qs = self.filter(state=state)
        if queue:
            qs = qs.filter(queue=queue)
        if task and task != "*":
            qs = qs.filter(name__regex=glob_regex(task))
        return dict(qs.order_by().values("queue").annotate(n=Count("id")).values_list("queue", "n"))

    def exception_type(self) -> TaskRunQuerySet:
        """Annotate ``exc_type``: the exception's class name, the text before its first parenthesis."""
        paren = StrIndex("exception", Value("("))
        return self.annotate(
            exc_type=Case(
                When(exception__contains="(", then=Left("exception", paren - 1)),
                default=F("exception"),
                output_field=models.CharField(),
            )
        )

    def failure_groups(self, since: dt.datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Failed runs (finished since ``since``) by task name and exception class, the latest group first."""
        failed = self.filter(state="FAILURE")
        if since is not None:
            failed = failed.filter(finished_at__gte=since)
        return list(
            failed.exception_type()
            .values("name", "exc_type")
            .annotate(count=Count("id"), last_id=Max("id"), last_at=Max("finished_at"))
            .order_by("-last_id")[:limit]
        )


class WorkerQuerySet(PruneMixin, models.QuerySet):
    def gone(self, cutoff: dt.datetime) -> WorkerQuerySet:
        """Workers offline since before ``cutoff`` on which no run is left received or started.

        A worker with such a run keeps its row until liveness has marked the run
        LOST (it reads the offline worker's last heartbeat for that).
        """
        from taskdeck.models import TaskRun, TaskState

        busy = TaskRun.objects.filter(
            worker=models.OuterRef("hostname"), state__in=[TaskState.RECEIVED, TaskState.STARTED]
        )
        seen_before = models.Q(last_heartbeat__lt=cutoff) | models.Q(
            last_heartbeat__isnull=True, updated_at__lt=cutoff
        )
        return self.filter(seen_before, online=False).exclude(models.Exists(busy))

    def expire(self, now: float, misses: int) -> int:
        """Mark offline every worker whose last heartbeat is older than ``misses`` intervals."""
        stale = []
        for pk, last, interval in self.filter(online=True).values_list(
            "pk", "last_heartbeat", "heartbeat_interval"
        ):
            if last is None or now - last.timestamp() > misses * (interval or 2.0):
                stale.append(pk)
        return self.filter(pk__in=stale).update(online=False) if stale else 0

    def online(self) -> WorkerQuerySet:
        return self.filter(online=True)

    def shown(self, limit: int = WORKERS_SHOWN) -> WorkerQuerySet:
        """The first ``limit`` workers as lists show them: online first, then by hostname."""
        return self.order_by("-online", "hostname")[:limit]

    def consumed_queues(self) -> set[str] | None:
        """The queues online workers consume; None while an online worker's queues are not known yet."""
        out: set[str] = set()
        for queues in self.online().values_list("queues", flat=True):
            if not isinstance(queues, list):
                return None
            out.update(q for q in queues if isinstance(q, str))
        return out


class RollupQuerySet(PruneMixin, models.QuerySet[_R]):
    """Queries of any rollup table (:class:`~taskdeck.models.Rollup`): by the start of its periods."""

    def window(
        self, since: dt.datetime, until: dt.datetime | None = None, **filters: Any
    ) -> RollupQuerySet[_R]:
        """Rows whose period starts in [since, until); ``filters`` (name, queue) apply when set."""
        start = self.model.period_field
        qs = self.filter(**{f"{start}__gte": since}, **{k: v for k, v in filters.items() if v})
        return qs.filter(**{f"{start}__lt": until}) if until else qs

    def expired(self, cutoff: dt.datetime) -> RollupQuerySet[_R]:
        """Rows whose whole period ended by ``cutoff``."""
        model = self.model
        return self.filter(**{f"{model.period_field}__lte": cutoff - dt.timedelta(seconds=model.period)})

    def stats(self) -> dict[str, Any]:
        """Counts, failure rate and latency percentiles over the rows of this queryset."""
        from taskdeck.monitor import histogram

        totals = self.aggregate(
            succeeded=Sum("succeeded"),
            failed=Sum("failed"),
            revoked=Sum("revoked"),
            rejected=Sum("rejected"),
            retried=Sum("retried"),
        )
        counts = {k: v or 0 for k, v in totals.items()}
        runtime: dict[str, int] = {}
        wait: dict[str, int] = {}
        for r_hist, w_hist in self.values_list("runtime_hist", "wait_hist").iterator(chunk_size=2000):
            for acc, hist in ((runtime, r_hist), (wait, w_hist)):
                for key, count in (hist or {}).items():
                    acc[key] = acc.get(key, 0) + count
        finished = counts["succeeded"] + counts["failed"] + counts["revoked"] + counts["rejected"]
        qs = (0.5, 0.95, 0.99)
        return {
            **counts,
            "finished": finished,
            "failure_rate": (counts["failed"] / finished) if finished else 0.0,
            "runtime": {f"p{int(q * 100)}": v for q, v in histogram.percentiles(runtime, qs).items()},
            "wait": {f"p{int(q * 100)}": v for q, v in histogram.percentiles(wait, qs).items()},
        }


class UtcText(models.Func):
    """A timestamp as PostgreSQL writes it in UTC, to the microsecond: ``2026-12-02T09:00:00.250000``."""

    output_field = models.TextField()
    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"


def json_time(text: str) -> str:
    """:class:`UtcText` as Django's JSON encoder writes that datetime: milliseconds if any, then ``Z``."""
    return (text[:-7] if text.endswith(".000000") else text[:23]) + "Z"


#: The columns a queue sample is read as (:meth:`QueueSampleQuerySet.newest`, the API's ``QueueOut``).
SAMPLE_FIELDS = ("queue", "sampled_at", "ready", "unacked", "consumers", "by_priority", "oldest_age")


class QueueSampleQuerySet(DistinctMixin, PruneMixin, models.QuerySet):
    def newest(self, limit: int) -> list[tuple[Any, ...]]:
        """The newest ``limit`` samples, each the values of :data:`SAMPLE_FIELDS`, for the JSON API.

        On PostgreSQL ``sampled_at`` comes as the text the API's JSON holds and
        ``by_priority`` is decoded once per distinct value: parsing 5,000
        timestamps to format them again, and a JSON document per row, were
        most of ``api/queues/<name>/samples?limit=5000`` (docs/benchmarks.md).
        Tuples, not dicts: a page of 5,000 makes few objects for the collector.
        """
        rows = self.order_by("-sampled_at")
        if connections[self.db].vendor != "postgresql":
            return list(rows.values_list(*SAMPLE_FIELDS)[:limit])
        text = rows.values_list(
            "queue",
            UtcText("sampled_at"),
            "ready",
            "unacked",
            "consumers",
            Cast("by_priority", models.TextField()),
            "oldest_age",
        )[:limit]
        decoded: dict[str, Any] = {}
        out = []
        for queue, at, ready, unacked, consumers, by_priority, oldest_age in text:
            if by_priority not in decoded:
                decoded[by_priority] = json.loads(by_priority)
            out.append((queue, json_time(at), ready, unacked, consumers, decoded[by_priority], oldest_age))
        return out

    def latest_per_queue(self) -> list[Any]:
        """The newest sample of each queue, by queue name.

        One index probe per queue (``taskdeck_qsample_queue``), not a GROUP BY
        over the two days of samples kept.
        """
        rows = (
            self.filter(queue=queue).order_by("-sampled_at").first()
            for queue in self.distinct_values("queue")
        )
        return [row for row in rows if row is not None]


class Row(dict[str, Any]):
    """A row read as some of its columns (:meth:`TaskRunQuerySet.briefly`): its keys read as attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _rows(qs: Any) -> list[Any]:
    """``qs`` as a list: model instances, or :class:`Row` rows for a queryset of values."""
    return [Row(row) if isinstance(row, dict) else row for row in qs]


def _merged(pages: list[list[Any]]) -> list[Any]:
    """Runs of several pages (each oldest first), oldest first, each once."""
    return sorted({run.id: run for page in pages for run in page}.values(), key=lambda run: run.id)


#: The columns a run page of one value is read by, from their ``(column, -id)`` index.
INDEX_WALKS = ("name", "queue", "worker")


def _next_prefix(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (in code point order)."""
    return prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))


def glob_regex(pattern: str) -> str:
    """A database regex matching what ``fnmatch`` matches with ``pattern`` (``*`` and ``?``)."""
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$"


def cutoff(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else timezone.now() - dt.timedelta(seconds=seconds)


#: What a dead letter costs besides its body (headers, properties, reason), counted by ``prune_beyond``.
DEAD_LETTER_ROW_BYTES = 1024


class DeadLetterQuerySet(PruneMixin, models.QuerySet):
    def search(
        self, *, kind: str | None = None, task: str | None = None, task_id: str | None = None
    ) -> DeadLetterQuerySet:
        qs = self
        if kind:
            qs = qs.filter(kind=kind)
        if task:
            qs = qs.filter(task=task)
        if task_id:
            qs = qs.filter(task_id=task_id)
        return qs

    def newest_first(self) -> DeadLetterQuerySet:
        return self.order_by("-id")

    def prune_beyond(self, max_bytes: int, batch: int) -> int:
        """Delete the oldest dead letters beyond the newest ``max_bytes`` (bodies + 1 KiB a row)."""
        total, last_id = 0, None
        sizes = self.annotate(size=Coalesce(Length("body"), 0)).order_by("-id").values_list("id", "size")
        while True:
            chunk = list((sizes.filter(id__lt=last_id) if last_id is not None else sizes)[:batch])
            if not chunk:
                return 0
            for pk, size in chunk:
                total += int(size) + DEAD_LETTER_ROW_BYTES
                if total > max_bytes:
                    return self.prune(batch, id__lte=pk)
            last_id = chunk[-1][0]
