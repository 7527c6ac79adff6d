"""``taskdeck up`` end to end: what ``make run`` does on a machine with nothing running.

Each test runs the real command in a temporary data folder, from the project
folder, with no broker or database in the environment (the embedded default),
and checks that it leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskdeck import supervision
from tests.support.services import ARTIFACTS, ROOT, Proc, wait_for

TASKDECK = [sys.executable, "-m", "taskdeck.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(marker: str) -> list[str]:
    """Processes whose environment or command line mention ``marker`` (other than this one)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {command}")
    return found


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh machine's environment: no broker, no database URL, a data folder of its own."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER", "DATABASE_URL", "CELERY_BACKEND"}
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(TASKDECK_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    yield env
    leftovers = processes_with(str(tmp_path))
    for line in leftovers:
        os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TASKDECK + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start_up(env: dict[str, str], name: str, *args: str) -> Proc:
    proc = Proc([*TASKDECK, "up", *args], env, ARTIFACTS / f"up-{name}.log")
    wait_for(lambda: not proc.alive() or "Ctrl-C stops everything" in proc.output(), 180, "taskdeck up")
    assert proc.alive(), f"taskdeck up exited:\n{proc.output()}"
    return proc


def stop_up(proc: Proc) -> str:
    proc.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.popen.wait(120) == 0
    proc.stop()
    return proc.output()


def test_up_runs_the_demo_on_the_embedded_default_and_stops_cleanly(embedded_env: dict[str, str]) -> None:
    port = free_port()
    loose = os.umask(0o022)  # a usual umask: the data folder is private all the same
    try:
        up = start_up(embedded_env, "embedded", "--address", f"127.0.0.1:{port}")
    finally:
        os.umask(loose)
    try:
        log = up.output()
        assert "starting the embedded Redis" in log
        assert f"dashboard: http://127.0.0.1:{port}/taskdeck/" in log
        data = Path(embedded_env["TASKDECK_DATA_DIR"])
        assert (data / "redis.sock").exists() and (data / "db.sqlite3").exists()
        assert (data / "gunicorn.ctl").exists()  # not ~/.gunicorn, shared by every project on the host
        assert "warning:" not in log  # DEBUG off, the database private

        demo = run(["demo", "--timeout", "150"], embedded_env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        report = demo.stdout
        assert "11 of 11 jobs ended as expected" in report
        # Where each task went, as the worker received it: every route and lane.
        rows = re.findall(r"^\s{4}(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s", report, re.M)
        by_name: dict[str, set[str]] = {}
        for name, queue, _worker, _state, _retries in rows:
            by_name.setdefault(name, set()).add(queue)
        assert by_name["orders.tasks.charge_payment"] == {"high_priority"}
        assert by_name["orders.tasks.confirm_order"] == {"medium_priority"}
        assert by_name["reports.tasks.summarize"] == {"medium_priority"}
        assert by_name["catalog.tasks.publish_gallery"] == {"default"}
        assert by_name["notifications:send_email"] == {"notifications"}
        assert by_name["orders.tasks.send_receipt"] == {"medium_priority"}  # a Django task
        assert by_name["maintenance.tasks.rebuild_search_index"] == {"low_priority", "high_priority"}
        # The flaky payment was retried twice before it went through.
        assert any(
            n == "orders.tasks.charge_payment" and r == "2" for n, _, _, s, r in rows if s == "SUCCESS"
        )

        assert_private(data)
        assert_served(port)

        status = run(["status"], embedded_env)
        assert status.returncode == 0, status.stdout + status.stderr
        for group in ("lanes@", "notifications@", "default@"):
            assert group in status.stdout
        assert "broker reachable" in status.stdout
        # The recorder asked the new workers for their pool without waiting for its 30 s round.
        assert status.stdout.count("prefork x") == 3, status.stdout
    finally:
        log = stop_up(up)
    assert "stopped" in log.splitlines()[-1]


def test_up_with_celery_broker_set_uses_it_starts_no_redis_and_restarts_a_dead_worker(
    embedded_env: dict[str, str], redis_db_url: str
) -> None:
    env = {**embedded_env, "CELERY_BROKER": redis_db_url}
    up = start_up(env, "external", "--no-web", "--no-beat")
    try:
        assert "embedded Redis" not in up.output()
        assert not (Path(env["TASKDECK_DATA_DIR"]) / "redis.sock").exists()

        # A worker that dies (OOM killer, a crash) is started again; the others keep running.
        killed = worker_main_pid(env["TASKDECK_DATA_DIR"], "default")
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        wait_for(
            lambda: "w:default exited with code -9: killed by SIGKILL; restarting it in 1s" in up.output(),
            30,
            "restart",
        )
        data = env["TASKDECK_DATA_DIR"]
        wait_for(lambda: worker_main_pid(data, "default") not in (None, killed), 30, "a new worker")
        wait_for(lambda: "default@" in run(["status"], env).stdout, 60, "the new worker answering")
        assert up.alive()
    finally:
        stop_up(up)


def assert_served(port: int) -> None:
    """The production server (gunicorn, not runserver) serves the dashboard and its static files."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/taskdeck/login/", timeout=30) as page:
        assert page.status == 200 and page.headers["Server"].startswith("gunicorn")
        html = page.read().decode()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{asset}", timeout=30) as served:
            assert served.status == 200 and served.read(), asset


def assert_private(data: Path) -> None:
    """The data folder 0700, and in it: folders 0700, files 0600 (database, WAL, append-only files, key)."""
    modes = {str(p.relative_to(data)): stat.S_IMODE(p.lstat().st_mode) for p in data.rglob("*")}
    modes["."] = stat.S_IMODE(data.stat().st_mode)
    names = set(modes)
    assert {"db.sqlite3", "db.sqlite3-wal", "secret_key"} <= names, names
    assert any(name.startswith("appendonlydir/") for name in names), names
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if not stat.S_ISSOCK((data / name).lstat().st_mode)
        and mode != (0o700 if (data / name).is_dir() else 0o600)
    }
    assert not loose, loose


def worker_main_pid(marker: str, group: str) -> int | None:
    """The main process of worker group ``group`` (the leader of its session), or None."""
    for line in processes_with(marker):
        pid = int(line.split(":")[0])
        with contextlib.suppress(ProcessLookupError):
            if f"-n {group}@%h" in line and os.getpgid(pid) == pid:
                return pid
    return None


def test_up_names_a_broker_that_does_not_answer(embedded_env: dict[str, str]) -> None:
    env = {**embedded_env, "CELERY_BROKER": "redis://127.0.0.1:1/0"}
    result = run(["up", "--no-web"], env, timeout=120)
    assert result.returncode == 1
    assert "broker redis://127.0.0.1:1/0 does not answer" in result.stdout


def test_worker_names_an_unknown_group(embedded_env: dict[str, str]) -> None:
    result = run(["worker", "gpu"], embedded_env)
    assert result.returncode == 1
    assert "no worker group 'gpu'" in result.stderr and "'lanes'" in result.stderr


# The web server's static files are not collected here (whitenoise says so once).
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_a_crash_looping_worker_is_restarted_shown_and_stops_nothing_else(
    embedded_env: dict[str, str], redis_db_url: str, admin_client, settings
) -> None:
    """A worker whose import fails crash-loops; web, recorder and the other workers keep answering."""
    env = {**embedded_env, "CELERY_BROKER": redis_db_url}
    data = Path(env["TASKDECK_DATA_DIR"])
    port = free_port()
    up = Proc(
        [
            *TASKDECK,
            "--settings",
            "tests.support.crashloop_settings",
            "-A",
            "core",
            "up",
            "--no-beat",
            "--address",
            f"127.0.0.1:{port}",
        ],
        env,
        ARTIFACTS / "up-crashloop.log",
    )
    try:
        wait_for(lambda: not up.alive() or "Ctrl-C stops everything" in up.output(), 180, "taskdeck up")
        assert up.alive(), up.output()
        reason = "ModuleNotFoundError: No module named 'taskdeck_module_that_does_not_exist'"
        wait_for(lambda: up.output().count(f"w:broken exited with code 1: {reason}") >= 3, 120, "three exits")
        log = up.output()
        assert "crash-looping, the others keep running" in log
        assert "(same output as before, not repeated)" in log
        # Its traceback is shown once, not once per attempt.
        assert len(re.findall(r"^w:broken\s+\| Traceback", log, re.M)) == 1, log

        status = supervision.read(data)
        assert status is not None and status["w:broken"]["state"] == "crash-looping"
        assert status["w:broken"]["last_reason"] == reason
        for name in ("w:default", "w:lanes", "w:notifications", "monitor", "web"):
            assert status[name]["state"] == "running", status

        # The others answer: the web server, the workers (a task runs), `taskdeck status`.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/taskdeck/login/", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'taskdeck_process_state{name="w:broken",state="crash-looping"} 1.0' in metrics
        assert 'taskdeck_process_state{name="web",state="running"} 1.0' in metrics
        shown = run(["--settings", "tests.support.crashloop_settings", "-A", "core", "status"], env)
        assert "default@" in shown.stdout and "w:broken" in shown.stdout and "crash-looping" in shown.stdout

        # The dashboard's banner names it.
        settings.TASKDECK = {**settings.TASKDECK, "DATA_DIR": data}
        banner = admin_client.get("/taskdeck/status/").content.decode()
        assert "w:broken is crash-looping." in banner and "taskdeck_module_that_does_not_exist" in banner
        assert up.alive()
    finally:
        log = stop_up(up)
    assert not data.joinpath(supervision.FILENAME).exists()
    assert "stopped" in log.splitlines()[-1]


def test_up_and_worker_name_wrong_settings_and_start_nothing(embedded_env: dict[str, str]) -> None:
    result = run(
        ["--settings", "tests.support.bad_workers_settings", "-A", "core", "up", "--no-web"], embedded_env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    for line in (
        "taskdeck.E006: TASKDECK['WORKERS']['typo']['queues'] must be a non-empty list of queue names, "
        "got 'default': no worker starts for it.",
        "taskdeck.E006: TASKDECK['WORKERS']['typo']['concurrency'] must be an integer of at least 1, "
        "got 'two': no worker starts for it.",
        "taskdeck.E006: TASKDECK['WORKERS']['loose'] must be a dict, got 'main': no worker starts for it.",
        "taskdeck.E026: TASKDECK['WEB_WORKERS'] must be a whole number from 1 to 1,000,000,000,000,000, "
        "got 'two' (str): its default applies.",
        "error: system check errors",
    ):
        assert line in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "starting the embedded Redis" not in result.stdout  # nothing started
    worker = run(
        ["--settings", "tests.support.bad_workers_settings", "-A", "core", "worker", "typo"], embedded_env
    )
    assert worker.returncode == 1
    assert "['typo']['queues'] must be a non-empty list" in worker.stderr
    assert "Traceback" not in worker.stderr


def test_up_warns_of_debug_and_of_a_database_others_can_read(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from taskdeck.cli import _exposure_warnings

    database = tmp_path / "db.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o644)  # what an adopter's startproject database is
    said: list[str] = []
    settings = SimpleNamespace(
        DEBUG=True, DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}}
    )
    _exposure_warnings(lambda _name, line: said.append(line), settings, "0.0.0.0:8000", web=True)
    assert said == [
        "warning: DEBUG is on and the web server listens on 0.0.0.0:8000: an error page shows settings "
        "and source to whoever reaches it; turn DEBUG off outside development",
        f"warning: the SQLite database {database} can be read by other users of this host (mode 644): "
        "chmod 600 it",
    ]
    database.chmod(0o600)
    settings.DEBUG = False
    said.clear()
    _exposure_warnings(lambda _name, line: said.append(line), settings, "0.0.0.0:8000", web=True)
    assert said == []
