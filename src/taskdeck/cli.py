"""The ``taskdeck`` command.

Run it from the project folder (where ``manage.py`` is). The settings module
is ``--settings``, else ``$DJANGO_SETTINGS_MODULE``, else the one ``manage.py``
names; the Celery app is ``-A``, else the settings module's package (``core``
for ``core.settings``), as ``celery -A`` finds it.

Subcommands:

``up``       start everything: the embedded broker (unless ``CELERY_BROKER``
             names another one), migrations, the web server, one worker per
             group of ``TASKDECK["WORKERS"]``, beat and the recorder
``worker``   run one worker group as configured (on this or another host)
``demo``     send the demo workload and report where each task went
``status``   broker, queues with depth, workers online, recent failures
``top``      the same from the recorder, live, with the latest runs (failures marked)
``monitor``  run the recorder alone
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskdeck.errors import TaskdeckError

DEFAULT_DASHBOARD_PATH = "/taskdeck/"
#: Celery's default ``beat_schedule_filename``.
CELERY_SCHEDULE_FILE = "celerybeat-schedule"


def find_settings(explicit: str | None) -> str:
    """The Django settings module: ``--settings``, the environment, or ``manage.py``'s default."""
    if explicit:
        return explicit
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return os.environ["DJANGO_SETTINGS_MODULE"]
    manage = Path.cwd() / "manage.py"
    if manage.exists():
        found = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", manage.read_text())
        if found:
            return found.group(1)
    raise TaskdeckError(
        "no Django settings: run taskdeck from the folder of manage.py, "
        "or pass --settings / set DJANGO_SETTINGS_MODULE"
    )


def setup(args: argparse.Namespace) -> None:
    """Make the project importable and set Django up."""
    sys.path.insert(0, str(Path.cwd()))
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings = find_settings(args.settings)
    args.app = args.app or args.settings.split(".")[0]
    import django

    django.setup()


def celery_app(args: argparse.Namespace) -> Any:
    from celery.app.utils import find_app

    try:
        return find_app(args.app)
    except (ImportError, AttributeError) as exc:
        raise TaskdeckError(f"no Celery app {args.app!r} ({exc}): pass -A/--app") from exc


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    return env


def worker_argv(app: str, name: str, group: dict[str, Any]) -> list[str]:
    """``celery worker`` for a group of ``TASKDECK["WORKERS"]``."""
    return [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "-Q", ",".join(group["queues"]),
        "-c", str(group["concurrency"]),
        "-P", group["pool"],
        "--prefetch-multiplier", str(group["prefetch_multiplier"]),
        "-n", f"{name}@%h",
        "-l", "INFO",
    ]  # fmt: skip


def beat_argv(app_name: str, app: Any, data_dir: Path) -> list[str]:
    """``celery beat``; Celery's file scheduler keeps its file in ``data_dir``, not the current folder."""
    argv = [sys.executable, "-m", "celery", "-A", app_name, "beat", "-l", "INFO"]
    if app.conf.beat_schedule_filename == CELERY_SCHEDULE_FILE:  # Celery's default: relative to the cwd
        argv += ["--schedule", str(data_dir / CELERY_SCHEDULE_FILE)]
    return argv


def web_argv(address: str, workers: int, data_dir: Path) -> list[str]:
    """gunicorn serving the project's WSGI application (taskdeck/web.py): ``workers`` processes of 4 threads.

    Threads keep browsers' and scrapers' keep-alive connections without a
    process each; docs/benchmarks.md has the comparison with runserver and uvicorn.
    gunicorn's control socket (newer gunicorns) goes in the data folder: its
    default, one per user (``~/.gunicorn/gunicorn.ctl``), would be shared by
    every project's ``up`` on the host.
    """
    from gunicorn.config import KNOWN_SETTINGS

    control = ["--control-socket", str(data_dir / "gunicorn.ctl")]
    return [
        sys.executable, "-m", "gunicorn", "taskdeck.web:application",
        "--bind", address,
        "--workers", str(workers),
        "--worker-class", "gthread", "--threads", "4",
        "--keep-alive", "75",
        "--graceful-timeout", "20",
        *(control if any(s.name == "control_socket" for s in KNOWN_SETTINGS) else []),
    ]  # fmt: skip


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def cmd_up(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from taskdeck import conf
    from taskdeck.brokers import embedded
    from taskdeck.fleet import Fleet, ProcessExited, Spec

    options = conf.get()
    data_dir = Path(options["DATA_DIR"])
    _private_data(data_dir, settings.DATABASES["default"])
    # Not collected: whitenoise serves the apps' files, and warns at each start if the folder is missing.
    if getattr(settings, "STATIC_ROOT", None):
        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    app = celery_app(args)
    broker_url = app.conf.broker_url or ""
    address = args.address or options["WEB_ADDRESS"]
    fleet = Fleet(grace=args.grace, status_dir=data_dir)
    fleet.handle_signals()
    env = child_env()
    python = sys.executable
    fleet.reserve([f"w:{name}" for name in options["WORKERS"]] + ["taskdeck", "monitor"])
    try:
        # Before anything starts: a wrong setting is named, not met as a traceback or a restart loop.
        _system_checks(fleet.say)
        sock = embedded.socket_path(broker_url, data_dir)
        if sock is not None:
            if embedded.answers(sock):
                raise TaskdeckError(
                    f"a broker already answers on {sock}: is taskdeck up running here already?"
                )
            sock.unlink(missing_ok=True)
            fleet.say("taskdeck", f"starting the embedded Redis on {sock}")
            fleet.start(
                Spec("redis", embedded.server_command(sock), ready=lambda: embedded.answers(sock)), env
            )
        else:
            _check_broker(app, broker_url)
        fleet.say("taskdeck", f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}")
        _exposure_warnings(fleet.say, settings, address, web=not args.no_web)
        call_command("migrate", interactive=False, verbosity=0)
        connections.close_all()
        fleet.say("taskdeck", "migrations applied")
        _local_admin(fleet, broker_url, data_dir)
        for name, group in options["WORKERS"].items():
            fleet.start(Spec(f"w:{name}", worker_argv(args.app, name, group), restart=True), env)
        if not options["WORKERS"]:
            fleet.say("taskdeck", 'TASKDECK["WORKERS"] is empty: no worker started')
        if options["BEAT"] and not args.no_beat:
            fleet.start(Spec("beat", beat_argv(args.app, app, data_dir), restart=True), env)
        if options["MONITOR_PROCESS"]:
            recorder = [python, "-m", "taskdeck.monitor", "monitor", "-A", args.app]
            fleet.start(Spec("monitor", recorder, restart=True), env)
        if not args.no_web:
            web = web_argv(address, options["WEB_WORKERS"], data_dir)
            fleet.start(Spec("web", web, ready=lambda: _port_open(address), restart=True), env)
        _wait_for_workers(fleet, app, list(options["WORKERS"]))
        if not args.no_web:
            fleet.say("taskdeck", f"dashboard: http://{address}{DEFAULT_DASHBOARD_PATH}")
        demo = "`taskdeck demo` sends a workload, " if options["DEMO"] else ""
        fleet.say("taskdeck", f"up; {demo}Ctrl-C stops everything")
        fleet.wait()
        return 0
    except ProcessExited as exc:
        fleet.say("taskdeck", f"{exc}; stopping everything")
        return 1
    except (TaskdeckError, TimeoutError) as exc:
        fleet.say("taskdeck", f"error: {exc}")
        return 1
    finally:
        fleet.stop()
        fleet.say("taskdeck", "stopped")


def _system_checks(say: Callable[[str, str], None]) -> None:
    """Django's system checks, one line each; refuses to start on an error (a process would fail later)."""
    from django.core import checks

    messages = [m for m in checks.run_checks() if not m.is_silenced()]
    for message in messages:
        hint = f" ({message.hint})" if message.hint else ""
        say("taskdeck", f"{message.id or 'check'}: {message.msg}{hint}")
    errors = [m.id for m in messages if m.is_serious()]
    if errors:
        raise TaskdeckError(f"system check errors ({', '.join(map(str, errors))}): fix them and start again")


def _exposure_warnings(say: Callable[[str, str], None], settings: Any, address: str, web: bool) -> None:
    """What ``up`` serves that a stranger could read: said at start, not changed behind the project's back."""
    if web and settings.DEBUG:
        say(
            "taskdeck",
            f"warning: DEBUG is on and the web server listens on {address}: an error page shows "
            "settings and source to whoever reaches it; turn DEBUG off outside development",
        )
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(str(database["NAME"]))
        if name.exists() and name.stat().st_mode & 0o077:
            say(
                "taskdeck",
                f"warning: the SQLite database {name} can be read by other users of this host "
                f"(mode {name.stat().st_mode & 0o777:o}): chmod 600 it",
            )


def _private_data(data_dir: Path, database: Any) -> None:
    """The data folder 0700 and its files 0600; what ``up``'s processes make later is born private."""
    from taskdeck import datadir

    os.umask(datadir.PRIVATE_UMASK)  # inherited by every process started below
    datadir.tighten(data_dir)
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(str(database["NAME"]))
        if name.resolve().is_relative_to(data_dir.resolve()):
            datadir.private_file(name)


def _check_broker(app: Any, broker_url: str) -> None:
    from kombu.utils.url import maybe_sanitize_url

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, timeout=3)
    except Exception as exc:  # any failure to connect: say which broker and why
        raise TaskdeckError(f"broker {maybe_sanitize_url(broker_url)} does not answer: {exc}") from exc


def _local_admin(fleet: Any, broker_url: str, data_dir: Path) -> None:
    try:
        from taskdeck.dashboard.bootstrap import ensure_local_admin
    except ImportError:
        return

    class Say:
        def write(self, text: str) -> None:
            for line in text.splitlines():
                fleet.say("taskdeck", line)

    ensure_local_admin(Say())


def _wait_for_workers(fleet: Any, app: Any, groups: list[str], timeout: float = 120) -> None:
    """Wait until a worker of every group answers a ping, or has exited (the fleet restarts it).

    A group that fails to start is shown by the fleet (one line per exit, its
    state in the status file) and neither holds up nor stops the others.
    """
    deadline = time.monotonic() + timeout
    missing = set(groups)
    while missing:
        fleet.poll()
        missing -= {name for name in missing if fleet.supervised[f"w:{name}"].last_code is not None}
        if not missing:
            break
        replies = app.control.ping(timeout=1.0)
        missing -= {name.split("@")[0] for reply in replies for name in reply}
        if missing and time.monotonic() > deadline:
            fleet.say("taskdeck", f"workers {sorted(missing)} did not answer in {timeout:.0f}s; carrying on")
            return


def cmd_worker(args: argparse.Namespace) -> int:
    from taskdeck import conf

    _system_checks(lambda name, line: print(f"{name}: {line}", file=sys.stderr))
    groups = conf.get()["WORKERS"]
    if args.group not in groups:
        raise TaskdeckError(f"no worker group {args.group!r} in TASKDECK['WORKERS'] (have: {sorted(groups)})")
    argv = worker_argv(args.app, args.group, groups[args.group]) + list(args.celery_args)
    env = child_env()
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover - execve does not return


def cmd_demo(args: argparse.Namespace) -> int:
    from taskdeck import demo

    celery_app(args)
    return demo.run(sys.stdout, timeout=args.timeout)


def _monitor_cli(name: str) -> Any:
    from taskdeck.monitor import cli

    return cli.COMMANDS[name]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="taskdeck", description=__doc__.split("\n\n")[0])
    top.add_argument("--settings", help="Django settings module (default: from manage.py)")
    top.add_argument("-A", "--app", help="Celery app (default: the settings module's package)")
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start broker, web, workers, beat and recorder")
    up.add_argument("--address", help='web server host:port (default: TASKDECK["WEB_ADDRESS"])')
    up.add_argument("--no-web", action="store_true", help="start no web server")
    up.add_argument("--no-beat", action="store_true", help="start no beat")
    up.add_argument("--grace", type=float, default=30.0, help="seconds a process gets to stop (default 30)")
    up.set_defaults(func=cmd_up)
    worker = sub.add_parser("worker", help="run one worker group of TASKDECK['WORKERS']")
    worker.add_argument("group")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="more `celery worker` options")
    worker.set_defaults(func=cmd_worker)
    demo = sub.add_parser("demo", help="send the demo workload and report where each task went")
    demo.add_argument("--timeout", type=float, default=120.0)
    demo.set_defaults(func=cmd_demo)
    for name, text in [
        ("status", "broker, queues, workers, recent failures"),
        ("top", "live terminal view: queues, workers, recent runs"),
        ("monitor", "run the recorder"),
        ("rebuild-rollups", "recompute the coarse rollups and those of every task from the minute rows"),
    ]:
        command = sub.add_parser(name, help=text, add_help=False)
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(func=None, monitor=name)
    return top


#: Options of ``taskdeck`` itself that take a value (they come before the command).
GLOBAL_VALUE_OPTIONS = frozenset({"--settings", "-A", "--app"})


def _after_command(argv: list[str], command: str) -> list[str]:
    """The arguments after ``command`` in ``argv``: the command's own, passed on as they are."""
    value_next = False
    for index, token in enumerate(argv):
        if value_next:
            value_next = False
        elif token in GLOBAL_VALUE_OPTIONS:
            value_next = True
        elif token == command:
            return argv[index + 1 :]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = parser()
    # The recorder's commands parse their own options (`monitor --name b`, `status --window 60`):
    # argparse's REMAINDER does not take an option that comes first, so they are not left to it.
    args, unknown = top.parse_known_args(argv)
    if unknown and args.func is not None:
        top.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        setup(args)
        if args.func is None:
            rest = _after_command(argv, args.monitor)
            if args.monitor in ("status", "top", "monitor") and "-A" not in rest and "--app" not in rest:
                rest = ["-A", args.app, *rest]
            return int(_monitor_cli(args.monitor)(rest))
        return int(args.func(args))
    except TaskdeckError as exc:
        print(f"taskdeck: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
