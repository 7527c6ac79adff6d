"""Entry functions of ``taskdeck monitor``, ``taskdeck status`` and ``taskdeck top``.

Each takes ``argv`` (without the subcommand) and returns an exit code; the
``taskdeck`` command line and ``python -m taskdeck.monitor`` call them.
Django must be set up (``DJANGO_SETTINGS_MODULE``) before they are called.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from typing import Any


def _celery_app(spec: str | None) -> Any:
    if spec:
        from celery.bin.celery import find_app

        return find_app(spec)
    from celery import current_app

    return current_app._get_current_object()


def monitor_main(argv: list[str] | None = None) -> int:
    """Run the recorder until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="taskdeck monitor", description="Record Celery events into the database."
    )
    parser.add_argument("-A", "--app", help="Celery app, e.g. core (default: the current app)")
    parser.add_argument("--name", default="default", help="recorder name (one per database)")
    parser.add_argument("-l", "--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from taskdeck.monitor.recorder import build

    recorder = build(_celery_app(args.app), name=args.name)

    def stop(signum: int, frame: Any) -> None:
        recorder.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    recorder.run()
    return 0


def status_main(argv: list[str] | None = None) -> int:
    """Print one snapshot: workers, queues with depth, the window's counts, recent failures."""
    parser = argparse.ArgumentParser(prog="taskdeck status")
    parser.add_argument("-A", "--app", help="Celery app, e.g. core (default: the current app)")
    parser.add_argument(
        "--window", type=int, default=300, help="seconds the counts cover (default 300: 'last 5m')"
    )
    args = parser.parse_args(argv)
    from rich.console import Console

    from taskdeck import conf, supervision
    from taskdeck.terminal import render, snapshot

    app = _celery_app(args.app)
    snap = snapshot(window=args.window, app=app)
    console = Console()
    console.print(render(snap))
    processes = supervision.read(conf.get()["DATA_DIR"])
    if processes:
        console.print(supervision.table(processes))
    return 0 if snap["broker"]["ok"] else 1


def top_main(argv: list[str] | None = None) -> int:
    """Live view of the recorder's data, refreshed every ``--interval`` seconds until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="taskdeck top")
    parser.add_argument("-A", "--app", help="Celery app, e.g. core (default: the current app)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument(
        "--window", type=int, default=60, help="seconds the counts cover (default 60: 'last 1m')"
    )
    args = parser.parse_args(argv)
    from taskdeck.terminal import live

    with contextlib.suppress(KeyboardInterrupt):
        live(interval=args.interval, window=args.window, app=_celery_app(args.app))
    return 0


def rebuild_rollups_main(argv: list[str] | None = None) -> int:
    """Recompute the quarter-hour and hour rollups, and those of every task, from the minute rows."""
    parser = argparse.ArgumentParser(
        prog="taskdeck rebuild-rollups",
        description="Recompute the quarter-hour and hour rollups, and the rollups of every task, from the"
        " per-minute rows, one hour at a time under the recorder's write lock"
        " (the recorder may keep running).",
    )
    parser.add_argument(
        "--since", type=_utc_time, help="first hour to rebuild, ISO 8601 (default: all but the oldest hour)"
    )
    args = parser.parse_args(argv)
    from taskdeck.monitor.rebuild import rebuild_coarse

    done = rebuild_coarse(since=args.since)
    print(
        f"rebuilt {done['hours']} hours: {done['quarter']} quarter-hour rows, {done['hour']} hour rows,"
        f" {done['all']} rows of every task",
        flush=True,
    )
    return 0


def _utc_time(text: str) -> Any:
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-25T08:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


COMMANDS = {
    "monitor": monitor_main,
    "status": status_main,
    "top": top_main,
    "rebuild-rollups": rebuild_rollups_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m taskdeck.monitor {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    import django

    django.setup()
    return COMMANDS[argv[0]](argv[1:])
