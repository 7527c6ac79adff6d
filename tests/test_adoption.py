"""docs/adopting.md, followed by a new project: the built wheel, runtime extras only, a fresh venv.

The wheel is built from this checkout and installed with ``[redis]`` alone
(no dev extras, so nothing the test suite pulls in can hide a missing
runtime requirement) into a virtualenv of its own. ``django-admin
startproject`` makes the project; each block of the guide marked
``<!-- adopting-test: write|append PATH -->`` is applied as the guide says.
Then ``taskdeck up`` runs it on real Redis: tasks go through a real worker,
the recorder records them (read back through the API with a token), and the
dashboard shows them to a logged-in staff user.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.cli.test_up import free_port, processes_with
from tests.support.services import ARTIFACTS, ROOT, Proc, wait_for

GUIDE = ROOT / "docs" / "adopting.md"
MARKER = re.compile(r"<!-- adopting-test: (write|append) (\S+) -->\n```\w*\n(.*?)```", re.S)
TOKEN = "adoption-e2e-token"
PASSWORD = "adoption-e2e-password"
SECRET = "adoption-supplier-s3cret"


def steps() -> list[tuple[str, str, str]]:
    """(action, path, text) for each block of the guide the test applies, in order."""
    found = MARKER.findall(GUIDE.read_text())
    assert found, "docs/adopting.md has no <!-- adopting-test --> blocks"
    return found


def sh(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout and ``[redis]`` only."""
    base = tmp_path_factory.mktemp("adoption")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    sh(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(ROOT)],
        base,
        env,
    )
    (wheel,) = (base / "dist").glob("taskdeck-*.whl")
    sh([sys.executable, "-m", "venv", str(base / "venv")], base, env)
    python = base / "venv" / "bin" / "python"
    sh([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[redis]"], base, env, timeout=600)
    installed = sh([str(python), "-m", "pip", "list", "--format=freeze"], base, env).lower()
    for dev_only in ("pytest", "django-celery-beat", "psycopg", "hypothesis", "mypy"):
        assert f"\n{dev_only}==" not in f"\n{installed}", f"{dev_only} is installed: not a runtime-only venv"
    return base / "venv"


def test_a_new_project_follows_the_guide_and_runs_tasks_recorder_and_dashboard(
    venv: Path, tmp_path: Path, redis_db_url: str
) -> None:
    bin_ = venv / "bin"
    project = tmp_path / "mysite"
    project.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        PATH=f"{bin_}:{env['PATH']}",
        CELERY_BROKER_URL=redis_db_url,
        TASKDECK_API_TOKENS=TOKEN,
        PYTHONUNBUFFERED="1",
        DJANGO_SUPERUSER_USERNAME="owner",
        DJANGO_SUPERUSER_EMAIL="owner@example.com",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    sh([str(bin_ / "django-admin"), "startproject", "mysite", str(project)], tmp_path, env)
    manage = [str(bin_ / "python"), "manage.py"]
    sh([*manage, "startapp", "shop"], project, env)
    for action, path, text in steps():
        target = project / path
        if action == "write":
            target.write_text(text)
        else:
            target.write_text(target.read_text() + "\n" + text)

    assert "System check identified no issues" in sh([*manage, "check"], project, env)
    sh([*manage, "migrate", "--verbosity", "0"], project, env)
    sh([*manage, "createsuperuser", "--noinput"], project, env)

    # Beat as the guide runs it in production, before anything made the data folder: Celery's
    # file scheduler (no django-celery-beat here) makes it, instead of stopping at start.
    assert not (project / ".taskdeck").exists()
    beat_log = ARTIFACTS / "adoption-beat.log"
    beat = Proc([str(bin_ / "celery"), "-A", "mysite", "beat"], env, beat_log, cwd=project)
    try:
        schedule = ".taskdeck/celerybeat-schedule*"
        wait_for(lambda: not beat.alive() or list(project.glob(schedule)), 60, "the schedule file")
        assert beat.alive(), beat.output()
    finally:
        beat.stop()

    port = free_port()
    up = Proc(
        [str(bin_ / "taskdeck"), "up", "--address", f"127.0.0.1:{port}"],
        env,
        ARTIFACTS / "adoption-up.log",
        cwd=project,
    )
    try:
        wait_for(lambda: not up.alive() or "Ctrl-C stops everything" in up.output(), 180, "taskdeck up")
        assert up.alive(), up.output()
        log = up.output()
        assert "taskdeck demo" not in log  # no demo configured: none advertised
        assert "Traceback" not in log, log

        # Tasks through the real worker on Redis.
        send = (
            "from shop.tasks import add, check_stock; "
            "print(add.delay(2, 3).get(timeout=60)); "
            "r = check_stock.delay(''); r.get(timeout=60, propagate=False); print(r.state)"
        )
        assert sh([*manage, "shell", "-v", "0", "-c", send], project, env).split() == ["5", "FAILURE"]

        # The recorder recorded both, named: read back through the API with a token.
        base = f"http://127.0.0.1:{port}"

        def runs() -> dict[str, str]:
            request = urllib.request.Request(
                f"{base}/taskdeck/api/tasks", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                items = json.load(response)["items"]
            return {item["name"]: item["state"] for item in items}

        wait_for(
            lambda: runs() == {"shop.tasks.add": "SUCCESS", "shop.tasks.check_stock": "FAILURE"},
            60,
            "both runs recorded",
        )

        # The preset's backend on a Redis broker: one record per run, whose result rows the
        # recorder of `taskdeck up` writes to django-celery-results' table.
        rows = (
            "from celery import current_app; from django_celery_results.models import TaskResult; "
            "print(type(current_app.backend).__name__, "
            "sorted(TaskResult.objects.values_list('task_name', 'status')))"
        )
        seen = [""]

        def stored() -> bool:
            seen[0] = sh([*manage, "shell", "-v", "0", "-c", rows], project, env).strip()
            return seen[0] == (
                "RecordBackend [('shop.tasks.add', 'SUCCESS'), ('shop.tasks.check_stock', 'FAILURE')]"
            )

        wait_for(stored, 60, lambda: f"the record backend's result rows in the table, saw {seen[0]}")

        # The dashboard, logged in as the staff user.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(f"{base}/taskdeck/login/", timeout=10) as response:
            page = response.read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert csrf, page
        form = {"csrfmiddlewaretoken": csrf.group(1), "username": "owner", "password": PASSWORD}
        login = urllib.request.Request(
            f"{base}/taskdeck/login/",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Referer": f"{base}/taskdeck/login/"},
        )
        with opener.open(login, timeout=10) as response:
            assert "/login/" not in response.url, "login refused"
        with opener.open(f"{base}/taskdeck/tasks/", timeout=10) as response:
            page = response.read().decode()
        assert "shop.tasks.add" in page and "shop.tasks.check_stock" in page

        # A positional secret waiting in a queue nothing consumes: redacted in the message
        # browser of the web server, a process that never imported shop.tasks itself.
        waits = (
            "from shop.tasks import sign_in; "
            f"print(sign_in.apply_async(('acme', {SECRET!r}), queue='shop_backlog').id)"
        )
        task_id = sh([*manage, "shell", "-v", "0", "-c", waits], project, env).strip()
        request = urllib.request.Request(
            f"{base}/taskdeck/api/queues/shop_backlog/messages", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
        (row,) = json.loads(body)["sub_queues"][0]["messages"]
        assert (row["task_id"], row["args"], row["problem"]) == (task_id, ["acme", "[redacted]"], None)
        assert SECRET not in body
        # The schedule file of Celery's own scheduler is in the data folder, not the project's.
        assert (project / ".taskdeck").is_dir()
        assert not list(project.glob("celerybeat-schedule*"))
    finally:
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(120)
        up.stop()
        leftovers = processes_with(str(project))
        for line in leftovers:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    assert code == 0, up.output()
    assert not leftovers
