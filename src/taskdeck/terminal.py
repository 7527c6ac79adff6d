"""``taskdeck status`` and ``taskdeck top``: the monitor's tables rendered with rich.

:func:`snapshot` reads (plain data, testable); :func:`render` draws it;
:func:`live` redraws it until interrupted. Both commands draw a queue, a
worker and a run with the same functions, list queues in the app's
configured order, and name the window their counts cover ("last 5m").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Column, Table

from taskdeck import conf
from taskdeck.models import QueueSample, TaskRun, Worker
from taskdeck.monitor.health import broker_health, recorder_health, window_stats
from taskdeck.monitor.merge import FINAL
from taskdeck.monitor.queues import without_consumer
from taskdeck.monitor.sampler import configured_queues, read_now

#: What the runs table lists: the latest failures (``status``) or the latest runs (``top``).
RunsKind = Literal["failures", "recent"]
#: States drawn as a failure in the runs table (marked with a cross, not by colour alone).
FAILED = frozenset({"FAILURE", "REJECTED"})


def snapshot(
    window: int = 300,
    app: Any = None,
    *,
    live: bool = True,
    runs: RunsKind = "failures",
    limit: int = 10,
) -> dict[str, Any]:
    """What the terminal views show.

    With ``app`` and ``live``, the broker is asked for each queue's depth and
    the workers answer a ping, so the snapshot is right even when the
    recorder is not running. Otherwise (``top`` redrawing every 2 s, or the
    broker down) the recorder's last samples and worker rows are shown.
    Queues come in the order ``app`` declares them, then any other sampled one.
    """
    workers = list(Worker.objects.shown())
    queues = None
    broker = None
    if app is not None and live:
        broker = broker_health(app)
        if broker["ok"]:
            queues = read_now(app)
            answered = {name for reply in app.control.ping(timeout=1.0) for name in reply}
            known = {w.hostname for w in workers}
            for w in workers:
                w.online = w.hostname in answered
            workers += [Worker(hostname=name, online=True) for name in sorted(answered - known)]
            workers.sort(key=lambda w: (not w.online, w.hostname))
    if queues is None:
        queues = QueueSample.objects.latest_per_queue()
    listed = TaskRun.objects.defer("traceback", "args", "kwargs", "result")
    if runs == "failures":
        listed = listed.filter(state="FAILURE")
    return {
        "broker": broker,
        "workers": workers,
        "queues": in_configured_order(queues, app),
        "stats": window_stats(window),
        "runs": runs,
        "recent": list(listed.order_by("-id")[:limit]),
        "limit": limit,
        "recorder": recorder_health(),
    }


def in_configured_order(queues: Iterable[QueueSample], app: Any) -> list[QueueSample]:
    """``queues`` in the order the dashboard's queue page lists them: ``MONITOR["QUEUES"]`` if set,
    else as the app declares them (``task_queues``, then the default queue); others after, by name."""
    declared = configured_queues(app, conf.monitor()["QUEUES"])() if app is not None else []
    order = {name: i for i, name in enumerate(declared)}
    return sorted(queues, key=lambda q: (order.get(q.queue, len(order)), q.queue))


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def summary(stats: dict[str, Any], recorder: dict[str, Any], broker: dict[str, Any] | None) -> str:
    """The panel's text: the window's counts, named, then the recorder and the broker."""
    text = (
        f"[bold]{stats['window_name']}[/]: finished {stats['finished']}  "
        f"failed {stats['failed']} ({stats['failure_rate']:.1%})  "
        f"throughput [bold]{stats['throughput']:.2f}/s[/]\n"
        f"runtime p50 {seconds(stats['runtime']['p50'])} p95 {seconds(stats['runtime']['p95'])}  "
        f"wait p95 {seconds(stats['wait']['p95'])}   "
        f"recorder {'[green]up[/]' if recorder['running'] else '[red]down[/]'} lag {seconds(recorder['lag'])}"
    )
    if broker is not None:
        text += (
            f"\nbroker [green]reachable[/] {escape(broker['url'])}"
            if broker["ok"]
            else f"\nbroker [red]unreachable[/]: {escape(str(broker['error']))}"
        )
    return text


WORKER_COLUMNS = ("worker", "status", "pool", "active", "processed", "load")


def worker_row(w: Worker) -> tuple[str, ...]:
    return (
        escape(w.hostname),
        "[green]online[/]" if w.online else "[red]offline[/]",
        f"{w.pool or '-'} x{w.concurrency or '?'}",
        str(w.active),
        str(w.processed),
        " ".join(f"{x:.2f}" for x in w.loadavg or []),
    )


QUEUE_COLUMNS = ("queue", "ready", "by priority", "unacked", "oldest")


def queue_row(q: QueueSample) -> tuple[str, ...]:
    by_priority = sorted(q.by_priority.items(), key=lambda kv: int(kv[0]))
    return (
        escape(q.queue) + (" [red](no consumer)[/red]" if without_consumer(q) else ""),
        str(q.ready),
        " ".join(f"{k}:{v}" for k, v in by_priority) or "-",
        "-" if q.unacked is None else str(q.unacked),
        seconds(q.oldest_age),
    )


#: Header and rich column options (fresh :class:`Column` objects per table: they hold the cells).
RUN_COLUMNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("", {"no_wrap": True}),
    ("finished", {"no_wrap": True}),
    ("task (exception)", {"ratio": 1, "overflow": "fold"}),
    ("state", {"no_wrap": True}),
    ("queue", {"no_wrap": True, "overflow": "ellipsis"}),
    ("runtime", {"no_wrap": True, "justify": "right"}),
    ("id", {"no_wrap": True}),
)


def run_row(run: TaskRun) -> tuple[str, ...]:
    failed = run.state in FAILED
    at = run.finished_at if run.state in FINAL else None
    return (
        "[red bold]✗[/]" if failed else "",
        f"{at:%H:%M:%S}" if at else "-",
        escape(run.name or "(unknown task)")
        + (f"\n[red]{escape(run.exception[:120])}[/]" if run.exception else ""),
        f"[red bold]{run.state}[/]" if failed else run.state,
        escape(run.queue or "-"),
        seconds(run.runtime),
        run.task_id[:8],
    )


def table(
    title: str, columns: Iterable[str | tuple[str, dict[str, Any]]], rows: Iterable[tuple[str, ...]]
) -> Table:
    drawn = Table(
        *(Column(c) if isinstance(c, str) else Column(c[0], **c[1]) for c in columns),
        title=title,
        expand=True,
    )
    for row in rows:
        drawn.add_row(*row)
    return drawn


def render(snap: dict[str, Any]) -> Group:
    recent = snap["recent"]
    if snap["runs"] == "failures":
        runs_title = f"Recent failures (the latest {snap['limit']})"
    else:
        failed = sum(run.state in FAILED for run in recent)
        runs_title = f"Recent runs (the latest {snap['limit']}; ✗ failed: {failed})"
    return Group(
        Panel(summary(snap["stats"], snap["recorder"], snap.get("broker")), title="taskdeck"),
        table("Workers", WORKER_COLUMNS, map(worker_row, snap["workers"])),
        table("Queues", QUEUE_COLUMNS, map(queue_row, snap["queues"])),
        table(runs_title, RUN_COLUMNS, map(run_row, recent)),
    )


def top_view(window: int = 60, app: Any = None) -> Group:
    """One frame of ``taskdeck top``: the recorder's view with the latest runs, failures marked."""
    return render(snapshot(window, app, live=False, runs="recent", limit=15))


def live(interval: float = 2.0, window: int = 60, app: Any = None) -> None:
    """``taskdeck top``: :func:`top_view` redrawn every ``interval`` seconds."""
    with Live(top_view(window, app), auto_refresh=False, screen=False) as view:
        while True:
            time.sleep(interval)
            view.update(top_view(window, app), refresh=True)
