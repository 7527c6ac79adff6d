"""``taskdeck status`` and ``taskdeck top``: the monitor's tables rendered with rich.

:func:`snapshot` reads (plain data, testable); :func:`render` draws it;
:func:`live` redraws it until interrupted.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from taskdeck.models import QueueSample, TaskRun, Worker
from taskdeck.monitor.health import broker_health, recorder_health, window_stats
from taskdeck.monitor.sampler import read_now


def snapshot(window: int = 300, failures: int = 10, app: Any = None) -> dict[str, Any]:
    """What the terminal views show; with ``app``, broker, queues and workers are read live.

    Live: the broker is asked for each queue's depth and the workers answer a
    ping, so the snapshot is right even when the recorder is not running.
    Without ``app`` (or when the broker is down) the recorder's last samples
    and worker rows are shown.
    """
    workers = list(Worker.objects.order_by("-online", "hostname"))
    queues = None
    broker = None
    if app is not None:
        broker = broker_health(app)
        if broker["ok"]:
            queues = read_now(app)
            answered = {name for reply in app.control.ping(timeout=1.0) for name in reply}
            known = {w.hostname for w in workers}
            for w in workers:
                w.online = w.hostname in answered
            workers += [Worker(hostname=name, online=True) for name in sorted(answered - known)]
            workers.sort(key=lambda w: (not w.online, w.hostname))
    return {
        "broker": broker,
        "workers": workers,
        "queues": QueueSample.objects.latest_per_queue() if queues is None else queues,
        "stats": window_stats(window),
        "failures": list(TaskRun.objects.filter(state="FAILURE").order_by("-id")[:failures]),
        "recorder": recorder_health(),
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def render(snap: dict[str, Any]) -> Group:
    stats, rec = snap["stats"], snap["recorder"]
    summary = (
        f"throughput [bold]{stats['throughput']:.2f}/s[/]  finished {stats['finished']}  "
        f"failed {stats['failed']} ({stats['failure_rate']:.1%})  "
        f"runtime p50 {_seconds(stats['runtime']['p50'])} p95 {_seconds(stats['runtime']['p95'])}  "
        f"wait p95 {_seconds(stats['wait']['p95'])}   "
        f"recorder {'[green]up[/]' if rec['running'] else '[red]down[/]'} lag {_seconds(rec['lag'])}"
    )
    broker = snap.get("broker")
    if broker is not None:
        summary += (
            f"\nbroker [green]reachable[/] {broker['url']}"
            if broker["ok"]
            else f"\nbroker [red]unreachable[/]: {broker['error']}"
        )
    workers = Table(title="Workers", expand=True)
    for column in ("worker", "status", "pool", "active", "processed", "load"):
        workers.add_column(column)
    for w in snap["workers"]:
        workers.add_row(
            w.hostname,
            "[green]online[/]" if w.online else "[red]offline[/]",
            f"{w.pool or '-'} x{w.concurrency or '?'}",
            str(w.active),
            str(w.processed),
            " ".join(f"{x:.2f}" for x in w.loadavg or []),
        )
    queues = Table(title="Queues", expand=True)
    for column in ("queue", "ready", "by priority", "unacked", "oldest"):
        queues.add_column(column)
    for q in snap["queues"]:
        queues.add_row(
            q.queue,
            str(q.ready),
            " ".join(f"{k}:{v}" for k, v in sorted(q.by_priority.items(), key=lambda kv: int(kv[0]))) or "-",
            "-" if q.unacked is None else str(q.unacked),
            _seconds(q.oldest_age),
        )
    failures = Table(title="Recent failures", expand=True)
    for column in ("finished", "task", "id", "exception"):
        failures.add_column(column)
    for run in snap["failures"]:
        failures.add_row(
            f"{run.finished_at:%H:%M:%S}" if run.finished_at else "-",
            run.name,
            run.task_id,
            run.exception[:80],
        )
    return Group(Panel(summary, title="taskdeck"), workers, queues, failures)


def live(interval: float = 2.0, window: int = 60) -> None:
    with Live(render(snapshot(window)), auto_refresh=False, screen=False) as view:
        while True:
            time.sleep(interval)
            view.update(render(snapshot(window)), refresh=True)
