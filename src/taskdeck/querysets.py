"""Queries of the monitor's tables; the API, /metrics and the terminal view call these."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import models
from django.db.models import Max, Q, Sum
from django.utils import timezone

FINAL = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")


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


class TaskRunQuerySet(PruneMixin, models.QuerySet):
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
    ) -> TaskRunQuerySet:
        qs = self
        if state:
            qs = qs.filter(state__in=[s.strip().upper() for s in state.split(",")])
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
            qs = qs.filter(Q(task_id=q) | Q(name__icontains=q))
        return qs

    def page(self, after: int | None, limit: int) -> list[Any]:
        """Newest first, keyset on the primary key: ``after`` is the last id of the previous page."""
        qs = self.order_by("-id")
        if after is not None:
            qs = qs.filter(id__lt=after)
        return list(qs[:limit])

    def workflow(self, run: Any, limit: int = 500) -> dict[str, list[Any]]:
        """Parent, children, group siblings and the whole tree of ``run``'s root."""
        parent = list(self.filter(task_id=run.parent_id)) if run.parent_id else []
        children = list(self.filter(parent_id=run.task_id).order_by("id")[:limit])
        group = list(self.filter(group_id=run.group_id).order_by("id")[:limit]) if run.group_id else []
        root_id = run.root_id or run.task_id
        tree = list(self.filter(Q(root_id=root_id) | Q(task_id=root_id)).order_by("id")[:limit])
        return {"parent": parent, "children": children, "group": group, "tree": tree}


class WorkerQuerySet(models.QuerySet):
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


class RollupQuerySet(PruneMixin, models.QuerySet):
    def window(self, since: dt.datetime, until: dt.datetime | None = None, **filters: Any) -> RollupQuerySet:
        qs = self.filter(minute__gte=since, **{k: v for k, v in filters.items() if v})
        return qs.filter(minute__lt=until) if until else qs

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
            runtime = histogram.merge([runtime, r_hist])
            wait = histogram.merge([wait, w_hist])
        finished = counts["succeeded"] + counts["failed"] + counts["revoked"] + counts["rejected"]
        qs = (0.5, 0.95, 0.99)
        return {
            **counts,
            "finished": finished,
            "failure_rate": (counts["failed"] / finished) if finished else 0.0,
            "runtime": {f"p{int(q * 100)}": v for q, v in histogram.percentiles(runtime, qs).items()},
            "wait": {f"p{int(q * 100)}": v for q, v in histogram.percentiles(wait, qs).items()},
        }


class QueueSampleQuerySet(PruneMixin, models.QuerySet):
    def latest_per_queue(self) -> list[Any]:
        """The newest sample of each queue."""
        newest = self.values("queue").annotate(at=Max("sampled_at"))
        wanted = Q()
        for row in newest:
            wanted |= Q(queue=row["queue"], sampled_at=row["at"])
        return list(self.filter(wanted).order_by("queue")) if newest else []


def cutoff(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else timezone.now() - dt.timedelta(seconds=seconds)
