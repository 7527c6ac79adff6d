"""Runs the events missed, filled in from django-celery-results rows.

The result row has the final state, worker, result and traceback, but no
queue or retry count; those stay empty unless events supply them later.
Facts from here carry ``source="results"``: a final state seen in an event
always wins over them, and a run whose final state came from here is marked
``reconstructed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.db.models import Exists, OuterRef

from taskdeck.models import TaskRun
from taskdeck.monitor.merge import FINAL, RunFact, clip

RESULT_STATES = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED"}


class ResultsSource:
    """Reads finished tasks from django-celery-results that have no final TaskRun."""

    def __init__(
        self, repr_limit: int = 1024, tb_limit: int = 16384, chunk: int = 1000, using: str = "default"
    ):
        self.repr_limit = repr_limit
        self.tb_limit = tb_limit
        self.chunk = chunk
        self.using = using

    def missing(self, since: dt.datetime | None, until: dt.datetime | None = None) -> Iterator[list[RunFact]]:
        """Chunks of facts for result rows done in [since, until] the recorder did not see finish."""
        from django_celery_results.models import TaskResult

        finished = TaskRun.objects.using(self.using).filter(task_id=OuterRef("task_id"), state__in=FINAL)
        rows = TaskResult.objects.using(self.using).filter(status__in=RESULT_STATES).filter(~Exists(finished))
        if since is not None:
            rows = rows.filter(date_done__gte=since)
        if until is not None:
            rows = rows.filter(date_done__lte=until)
        last_pk = 0
        while True:
            chunk = list(rows.filter(pk__gt=last_pk).order_by("pk")[: self.chunk])
            if not chunk:
                return
            last_pk = chunk[-1].pk
            yield [fact for row in chunk for fact in self.facts(row)]

    def facts(self, row: Any) -> list[RunFact]:
        """The final fact of a result row, plus its start when the row has one."""
        done = round(row.date_done.timestamp(), 6)
        attempt = {"worker": row.worker or ""}
        if row.status == "SUCCESS":
            attempt["result"] = clip(row.result, self.repr_limit)
        else:
            attempt["exception"] = clip(row.result, self.repr_limit)
            attempt["traceback"] = clip(row.traceback, self.tb_limit)
        started = round(row.date_started.timestamp(), 6) if row.date_started else None
        if started is not None:
            attempt["runtime"] = max(done - started, 0.0)
        final = RunFact(
            task_id=row.task_id,
            state=row.status,
            timestamp=done,
            source="results",
            identity={
                k: v
                for k, v in {
                    "name": row.task_name or "",
                    "args": clip(row.task_args, self.repr_limit) if row.task_args else "",
                    "kwargs": clip(row.task_kwargs, self.repr_limit) if row.task_kwargs else "",
                }.items()
                if v
            },
            attempt=attempt,
        )
        if started is None:
            return [final]
        start = RunFact(
            task_id=row.task_id, state="STARTED", timestamp=started, source="results", column="started_ts"
        )
        return [start, final]
