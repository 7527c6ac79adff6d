"""``/metrics`` in Prometheus text format, read from the recorder's tables at scrape time.

The web process keeps no counters of its own (several web processes, one
recorder): a :class:`MonitorCollector` turns :class:`~taskdeck.models.TaskTotal`
rows, the newest queue samples, worker rows and the recorder's state into
metric families on each scrape, through prometheus-client.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from typing import Any

from celery import current_app
from django.db import InterfaceError, OperationalError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from taskdeck import conf
from taskdeck.errors import first_line
from taskdeck.models import QueueSample, RecorderState, TaskRun, TaskState, TaskTotal, Worker
from taskdeck.monitor.health import recorder_health
from taskdeck.monitor.queues import configured_queues, without_consumer
from taskdeck.policy import Scope, metrics_scope, rollups_q


class MonitorCollector:
    """Every family on each scrape; task and queue series only those ``scope`` admits.

    Series without a task or queue label (workers online, the recorder, processes)
    are the whole deployment's health, the same for every scraper.
    """

    def __init__(self, buckets: list[float], scope: Scope | None = None) -> None:
        self.buckets = buckets
        self.scope = scope or Scope.everything()

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield self._lost_and_stuck()
        yield from self._queues()
        workers = GaugeMetricFamily("taskdeck_workers_online", "Workers whose heartbeat is current.")
        workers.add_metric([], Worker.objects.online().count())
        yield workers
        yield from self._recorders()
        yield self._bad_events()
        yield from self._processes()

    def _lost_and_stuck(self) -> Metric:
        """Runs LOST or STUCK now (taskdeck.monitor.liveness) in scope, per queue; both states always."""
        runs = GaugeMetricFamily(
            "taskdeck_runs_unhealthy",
            "Task runs LOST (their worker went offline mid-run) or STUCK (not received in time, or "
            "no consumer) now, by queue.",
            labels=["state", "queue"],
        )
        states = (TaskState.LOST.value, TaskState.STUCK.value)
        rows = [
            (state, queue, n)
            for state, name, queue, n in TaskRun.objects.filter(state__in=states)
            .order_by()
            .values("state", "name", "queue")
            .annotate(n=Count("id"))
            .values_list("state", "name", "queue", "n")
            if self.scope.allows_run(name, queue)
        ]
        queues = _capped(sorted({queue for _, queue, _ in rows}), conf.monitor()["METRICS_MAX_LABEL_VALUES"])
        counts: dict[tuple[str, str], int] = {}
        for state, queue, n in rows:
            counts[(state, queues(queue))] = counts.get((state, queues(queue)), 0) + n
        for state in states:  # a zero rather than no series: alerts on absence are fragile
            if not any(key[0] == state for key in counts):
                counts[(state, "")] = 0
        for key in sorted(counts):
            runs.add_metric(list(key), counts[key])
        return runs

    def _recorders(self) -> Iterator[Metric]:
        """Each recorder by name (``taskdeck monitor --name``); ``default`` down when there is none."""
        each = recorder_health()["recorders"] or {"default": {"running": False, "lag": None, "events": 0}}
        label = ["recorder"]
        lag = GaugeMetricFamily(
            "taskdeck_recorder_lag_seconds", "Event timestamp to database write, last batch.", labels=label
        )
        up = GaugeMetricFamily(
            "taskdeck_recorder_up", "1 when the recorder's heartbeat is current.", labels=label
        )
        events = CounterMetricFamily(
            "taskdeck_recorder_events", "Celery events the recorder processed.", labels=label
        )
        backlog = GaugeMetricFamily(
            "taskdeck_recorder_backlog",
            "Records waiting in the records stream at the recorder's last heartbeat (record backend).",
            labels=label,
        )
        for name, health in sorted(each.items()):
            lag.add_metric([name], health["lag"] if health["lag"] is not None else float("nan"))
            up.add_metric([name], 1.0 if health["running"] else 0.0)
            events.add_metric([name], health["events"])
            if health.get("backlog") is not None:
                backlog.add_metric([name], health["backlog"])
        yield from (lag, up, events, backlog)

    def _bad_events(self) -> Metric:
        bad = CounterMetricFamily(
            "taskdeck_recorder_bad_events",
            "Events the recorder skipped as unusable, and rows the database refused, by reason.",
            labels=["reason"],
        )
        totals: dict[str, int] = {}
        for counts in RecorderState.objects.values_list("bad_events", flat=True):
            for reason, count in (counts or {}).items():
                totals[reason] = totals.get(reason, 0) + int(count)
        for reason, count in sorted(totals.items()):
            bad.add_metric([reason], count)
        return bad

    def _processes(self) -> Iterator[Metric]:
        """The processes of a live `taskdeck up` on this host (its status file), none without one."""
        from taskdeck import conf, supervision

        processes = supervision.read(conf.get()["DATA_DIR"]) or {}
        state = GaugeMetricFamily(
            "taskdeck_process_state",
            "Processes `taskdeck up` supervises: 1 for the state each is in.",
            labels=["name", "state"],
        )
        restarts = CounterMetricFamily(
            "taskdeck_process_restarts", "Restarts by `taskdeck up` since it started.", labels=["name"]
        )
        for name, process in sorted(processes.items()):
            for each in supervision.STATES:
                state.add_metric([name, each], 1.0 if process.get("state") == each else 0.0)
            restarts.add_metric([name], float(process.get("restarts") or 0))
        yield state
        yield restarts

    def _tasks(self) -> Iterator[Metric]:
        labels = ["name", "queue", "state"]
        total = CounterMetricFamily("taskdeck_tasks", "Task runs finished, by final state.", labels=labels)
        runtime = HistogramMetricFamily(
            "taskdeck_task_runtime_seconds", "Runtime of finished task runs.", labels=["name", "queue"]
        )
        wait = HistogramMetricFamily(
            "taskdeck_task_wait_seconds", "Time from publish to start of task runs.", labels=["name", "queue"]
        )
        rows = list(TaskTotal.objects.filter(rollups_q(self.scope)).order_by("id"))
        limit = conf.monitor()["METRICS_MAX_LABEL_VALUES"]
        names, queues = _capped([r.name for r in rows], limit), _capped([r.queue for r in rows], limit)
        counts: dict[tuple[str, str, str], int] = {}
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            name, queue = names(row.name), queues(row.queue)
            counts[(name, queue, row.state)] = counts.get((name, queue, row.state), 0) + row.count
            acc = merged.setdefault(
                (name, queue),
                {
                    "runtime": [0] * (len(self.buckets) + 1),
                    "runtime_sum": 0.0,
                    "wait": [0] * (len(self.buckets) + 1),
                    "wait_sum": 0.0,
                },
            )
            for kind in ("runtime", "wait"):
                for i, count in enumerate(getattr(row, f"{kind}_buckets") or []):
                    if i < len(acc[kind]):
                        acc[kind][i] += count
                acc[f"{kind}_sum"] += getattr(row, f"{kind}_sum")
        for key in sorted(counts):
            total.add_metric(list(key), counts[key])
        for (name, queue), acc in sorted(merged.items()):
            runtime.add_metric([name, queue], self._cumulative(acc["runtime"]), acc["runtime_sum"])
            wait.add_metric([name, queue], self._cumulative(acc["wait"]), acc["wait_sum"])
        yield from (total, runtime, wait)

    def _cumulative(self, counts: list[int]) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def _queues(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "taskdeck_queue_messages_ready",
            "Messages waiting in a queue (per Redis priority sub-queue).",
            labels=["queue", "priority"],
        )
        unacked = GaugeMetricFamily(
            "taskdeck_queue_messages_unacked",
            "Messages delivered to a worker, not acknowledged.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "taskdeck_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message.",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "taskdeck_queue_consumers",
            "Workers consuming a queue (RabbitMQ's count, else the workers' active_queues).",
            labels=["queue"],
        )
        orphan = GaugeMetricFamily(
            "taskdeck_queue_without_consumer",
            "1 when a queue holds ready messages and no worker consumes it.",
            labels=["queue"],
        )
        folded = GaugeMetricFamily(
            "taskdeck_queue_labels_folded",
            'Queues beyond METRICS_MAX_LABEL_VALUES, counted together under queue="(other)" in the '
            "taskdeck_queue_* series.",
        )
        samples = [s for s in QueueSample.objects.latest_per_queue() if self.scope.allows_queue(s.queue)]
        # The declared queues first: a broker's stray list keys never push one of them into (other).
        declared = set(configured_queues(current_app, conf.monitor()["QUEUES"])())
        samples.sort(key=lambda s: (s.queue not in declared, s.queue))
        label = _capped([s.queue for s in samples], conf.monitor()["METRICS_MAX_LABEL_VALUES"])
        # (other) holds the folded queues' messages summed, the oldest message of any of them,
        # the fewest consumers of any, and 1 when any holds messages no worker consumes.
        merges: list[tuple[GaugeMetricFamily, Callable[[float, float], float]]] = [
            (ready, operator.add), (unacked, operator.add), (oldest, max), (consumers, min), (orphan, max)
        ]  # fmt: skip
        values: dict[str, dict[tuple[str, ...], float]] = {family.name: {} for family, _ in merges}

        def put(family: GaugeMetricFamily, key: tuple[str, ...], value: float) -> None:
            seen = values[family.name].get(key)
            merge = next(m for f, m in merges if f is family)
            values[family.name][key] = value if seen is None else merge(seen, value)

        for sample in samples:
            queue = label(sample.queue)
            if sample.consumers is not None:
                put(consumers, (queue,), sample.consumers)
            put(orphan, (queue,), 1.0 if without_consumer(sample) else 0.0)
            if sample.by_priority:
                for priority, count in sample.by_priority.items():
                    put(ready, (queue, str(priority)), count)
            else:
                put(ready, (queue, ""), sample.ready)
            if sample.unacked is not None:
                put(unacked, (queue,), sample.unacked)
            if sample.oldest_age is not None:
                put(oldest, (queue,), sample.oldest_age)
        for family, _ in merges:
            for key, value in values[family.name].items():
                family.add_metric(list(key), value)
        folded.add_metric([], len({s.queue for s in samples if label(s.queue) == OTHER}))
        yield from (ready, unacked, oldest, consumers, orphan, folded)


#: The label value that stands for every name or queue beyond ``METRICS_MAX_LABEL_VALUES``.
OTHER = "(other)"


def _capped(values: list[str], limit: int) -> Callable[[str], str]:
    """``value -> label``: the first ``limit`` distinct values, in the order first seen, keep their
    own label; later ones share :data:`OTHER`.

    Task names and queues come from events anyone with broker access can send:
    without a cap, forged names make a scrape of megabytes and a series each
    in Prometheus. First seen stays in, so a kept series never moves into
    :data:`OTHER` and no counter goes down.
    """
    kept = set(list(dict.fromkeys(values))[:limit])
    return lambda value: value if value in kept else OTHER


def render(scope: Scope | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(list(conf.monitor()["METRICS_BUCKETS"]), scope))
    return generate_latest(registry)


@require_GET
def view(request: HttpRequest) -> HttpResponse:
    try:
        scope = metrics_scope(request)
        if scope is None:
            return HttpResponse(
                "forbidden: a token or an address in TASKDECK['MONITOR']['METRICS_NETWORKS']\n",
                status=403,
                content_type="text/plain",
            )
        return HttpResponse(render(scope), content_type=CONTENT_TYPE_LATEST)
    except (OperationalError, InterfaceError) as exc:
        # A failed scrape (Prometheus' `up` goes to 0) that says why, not a 500.
        line = first_line(exc)
        response = HttpResponse(
            f"database unavailable: {type(exc).__name__}: {line}\n",
            status=503,
            content_type="text/plain",
        )
        response["Retry-After"] = "10"
        return response
