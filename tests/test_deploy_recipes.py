"""The deployment recipes under deploy/ (docs/deploying.md), validated as far as this machine allows.

- every YAML file parses; the compose file's services and dependencies are
  consistent; the worker groups of compose, Kubernetes, KEDA and systemd are
  the ones ``TASKDECK["WORKERS"]`` defines, and KEDA watches each group's queues;
- the systemd units pass ``systemd-analyze verify`` (their executables pointed
  at this checkout's virtualenv);
- every command the recipes run (migrate, web, each worker group, beat, the
  recorder) starts against the real Redis and PostgreSQL here, with the
  recipes' production environment (key set, HTTPS behind a proxy).

Not validated here (no Docker engine, no Kubernetes): building the image,
``docker compose up``, ``kubectl apply`` (docs/deploying.md says so).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.db import connection

from tests.cli.test_up import free_port
from tests.support.services import ARTIFACTS, ROOT, Proc, wait_for

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
TASKDECK_SERVICES = {"migrate", "web", "beat", "monitor"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def k8s_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def groups() -> set[str]:
    return set(settings.TASKDECK["WORKERS"])


def test_yaml_parses_and_every_recipe_runs_the_configured_worker_groups():
    services = compose()["services"]
    workers = {name.removeprefix("worker-") for name in services if name.startswith("worker-")}
    assert workers == groups()
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, (name, needed)
        if name in TASKDECK_SERVICES or name.startswith("worker-"):
            assert service["image"] == "taskdeck:latest" and service["command"][0] in {
                "python", "gunicorn", "taskdeck", "celery"
            }, name  # fmt: skip
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert all((DEPLOY / "k8s" / resource).exists() for resource in kustomization["resources"])
    docs = k8s_documents()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert {f"taskdeck-worker-{g}" for g in groups()} | {
        "taskdeck-web",
        "taskdeck-beat",
        "taskdeck-monitor",
    } == (deployments)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == {f"taskdeck-worker-{g}" for g in groups()}
    for group, options in settings.TASKDECK["WORKERS"].items():
        query = scaled[f"taskdeck-worker-{group}"]["spec"]["triggers"][0]["metadata"]["query"]
        pattern = re.search(r'queue=~"([^"]+)"', query).group(1)  # type: ignore[union-attr]
        assert {q for q in options["queues"] if re.fullmatch(pattern, q)} == set(options["queues"]), group
    target = (DEPLOY / "systemd" / "taskdeck.target").read_text()
    assert {f"taskdeck-worker@{g}.service" for g in groups()} <= set(
        re.findall(r"taskdeck-worker@\w+\.service", target)
    )


def test_systemd_units_verify(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text((DEPLOY / "env.example").read_text())
    names = []
    for unit in (DEPLOY / "systemd").iterdir():
        text = (
            unit.read_text().replace("/srv/taskdeck/.venv/bin", str(BIN)).replace("/srv/taskdeck", str(ROOT))
        )
        text = text.replace("/etc/taskdeck/env", str(env_file)).replace("=taskdeck\n", "=root\n")
        (tmp_path / unit.name).write_text(text)
        names.append(unit.name.replace("@.service", "@lanes.service"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[f"./{n}" for n in names]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr


def argv(command: list[str]) -> list[str]:
    """A recipe's command run from this checkout's virtualenv."""
    first = "python" if command[0] == "python" else command[0]
    executable = sys.executable if first == "python" else str(BIN / first)
    return [executable, *command[1:]]


@pytest.mark.django_db(transaction=True)
def test_every_command_of_the_recipes_starts_against_the_services_here(tmp_path, broker):
    services = compose()["services"]
    port = free_port()
    database = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKDECK_", "CELERY_"))}
    env.update(
        {k: v for k, v in services["web"]["environment"].items()},
        DJANGO_SETTINGS_MODULE="core.settings",
        DJANGO_SECRET_KEY="deploy-recipe-test-" + "k" * 40,
        DJANGO_ALLOWED_HOSTS="taskdeck.example.com",
        DJANGO_HTTPS="1",
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        CELERY_BROKER=broker,
        TASKDECK_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    migrate = subprocess.run(
        argv(services["migrate"]["command"]), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    web = [part.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for part in services["web"]["command"]]
    ready = {
        "web": (web, f"Listening at: http://127.0.0.1:{port}"),
        "beat": (services["beat"]["command"], "beat: Starting"),
        "monitor": (services["monitor"]["command"], "started (pid"),
        **{
            name: (service["command"], " ready.")
            for name, service in services.items()
            if name.startswith("worker-")
        },
    }
    procs: dict[str, Proc] = {}
    try:
        for name, (command, _) in ready.items():
            procs[name] = Proc(argv(command), env, ARTIFACTS / f"deploy-{name}.log", new_session=True)
        for name, (_, marker) in ready.items():
            proc = procs[name]
            wait_for(lambda p=proc, m=marker: m in p.output() or not p.alive(), 120, f"{name} to start")
            assert proc.alive() and marker in proc.output(), f"{name}:\n{proc.output()[-3000:]}"
        # Behind the TLS proxy: the proxy's https header and host get the page; plain http is redirected.
        page = urllib.request.Request(
            f"http://127.0.0.1:{port}/taskdeck/login/",
            headers={"Host": "taskdeck.example.com", "X-Forwarded-Proto": "https"},
        )
        with urllib.request.urlopen(page, timeout=30) as answer:
            assert answer.status == 200 and "Strict-Transport-Security" in answer.headers
        plain = urllib.request.Request(page.full_url, headers={"Host": "taskdeck.example.com"})
        with pytest.raises(urllib.error.HTTPError) as redirected:
            urllib.request.build_opener(NoRedirect).open(plain, timeout=30)
        assert redirected.value.code == 301
        assert redirected.value.headers["Location"].startswith("https://taskdeck.example.com/")
    finally:
        for proc in procs.values():
            if proc.alive():
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.popen.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
