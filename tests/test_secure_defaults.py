"""The reference project's production defaults, each a test that catches a development default's return.

- ``DEBUG`` off unless ``DJANGO_DEBUG=1``: no debug 404 listing the URLs;
- ``SECRET_KEY`` from ``DJANGO_SECRET_KEY``, else generated once into the
  data folder (0600, the folder 0700) and the same on every start;
- with a key set and debug off, ``manage.py check --deploy`` reports nothing;
- password validators on;
- no page loads anything from another site (the API docs' Swagger UI included),
  and the static files it names are served by the application itself.

File modes after ``taskdeck up`` are in tests/cli/test_up.py.
"""

from __future__ import annotations

import gc
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from tests.support.services import ROOT

pytestmark = pytest.mark.django_db


def project_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh deployment of the reference project: nothing of the test run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKDECK_"))}
    env.update(TASKDECK_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="core.settings", **extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def setting(env: dict[str, str], name: str) -> str:
    code = f"from django.conf import settings; import django; django.setup(); print(settings.{name})"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_debug_is_off_unless_asked_for(tmp_path, client):
    assert setting(project_env(tmp_path), "DEBUG") == "False"
    assert setting(project_env(tmp_path, DJANGO_DEBUG="true"), "DEBUG") == "False"
    assert setting(project_env(tmp_path, DJANGO_DEBUG="1"), "DEBUG") == "True"
    # This run's settings are the project's: an unknown URL gets a plain 404, not the URL list.
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert b"URLconf" not in page.content and b"taskdeck/" not in page.content


def test_secret_key_generated_once_into_a_private_data_folder(tmp_path):
    os.umask(old := os.umask(0o022))  # the usual umask: nothing private by accident
    env = project_env(tmp_path)
    first = setting(env, "SECRET_KEY")
    assert len(first) >= 50 and first == setting(env, "SECRET_KEY")
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600
    assert (data / "secret_key").read_text().strip() == first
    assert sorted(p.name for p in data.iterdir()) == ["secret_key"]  # no temporary file left
    assert setting({**env, "DJANGO_SECRET_KEY": "k" * 60}, "SECRET_KEY") == "k" * 60
    del old


def test_deploy_check_is_clean_with_a_key_set_and_debug_off(tmp_path):
    key = "a-deployment-key-" + "x7Q!" * 12
    deployed = manage(
        project_env(tmp_path, DJANGO_SECRET_KEY=key), "check", "--deploy", "--fail-level", "DEBUG"
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "System check identified no issues" in deployed.stdout
    # Plain HTTP on loopback (the embedded default's `taskdeck up`) is a choice the check names.
    local = manage(project_env(tmp_path), "check", "--deploy")
    found = set(re.findall(r"security\.W\d+", local.stdout + local.stderr))
    assert found == {"security.W004", "security.W008", "security.W012", "security.W016"}, local.stdout
    debug = manage(project_env(tmp_path, DJANGO_SECRET_KEY=key, DJANGO_DEBUG="1"), "check", "--deploy")
    assert "security.W018" in debug.stdout + debug.stderr  # DEBUG on: the check says so


def test_mail_is_printed_on_one_machine_and_sent_by_smtp_in_a_deployment(tmp_path):
    """The demo's welcome email works on `make run` (no relay there); a deployment never prints mail."""
    code = (
        "import django; django.setup(); from django.core import mail; c = mail.get_connection(); "
        "print(type(c).__module__, getattr(c, 'host', ''), getattr(c, 'port', ''))"
    )

    def backend(env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    key = "a-deployment-key-" + "x7Q!" * 12
    assert backend(project_env(tmp_path)) == "django.core.mail.backends.console"
    deployed = project_env(tmp_path, DJANGO_SECRET_KEY=key)
    assert backend(deployed) == "django.core.mail.backends.smtp localhost 25"
    relay = {"DJANGO_EMAIL_HOST": "smtp.example.com", "DJANGO_EMAIL_PORT": "587"}
    assert backend({**deployed, **relay}) == "django.core.mail.backends.smtp smtp.example.com 587"
    locmem = "django.core.mail.backends.locmem.EmailBackend"
    chosen = project_env(tmp_path, DJANGO_SECRET_KEY=key, DJANGO_EMAIL_BACKEND=locmem)
    assert backend(chosen) == "django.core.mail.backends.locmem"


def test_password_validators_refuse_weak_passwords():
    assert len(settings.AUTH_PASSWORD_VALIDATORS) == 4
    for weak in ("admin", "12345678901", "password123"):
        with pytest.raises(ValidationError):
            validate_password(weak)
    validate_password("correct horse battery staple 42")


EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
ASSET = re.compile(r"""(?:src|href)\s*=\s*["'](/static/[^"'?#]+)""", re.I)


def test_no_page_loads_anything_from_another_site(client, django_user_model, broker):
    """The API docs loaded Swagger UI from a CDN; every asset is the application's own, and served."""
    admin = django_user_model.objects.create_user("root", password="pw", is_staff=True, is_superuser=True)
    pages = [reverse("taskdeck:login"), "/admin/login/"]
    anonymous = {path: client.get(path) for path in pages}
    client.force_login(admin)
    pages = [
        reverse(f"taskdeck:{name}")
        for name in ("overview", "tasks", "failures", "queues", "workers", "audit")
    ] + ["/taskdeck/api/docs", "/admin/"]
    logged = {path: client.get(path) for path in pages}
    assets: set[str] = set()
    for path, page in {**anonymous, **logged}.items():
        assert page.status_code == 200, path
        html = page.content.decode()
        assert not EXTERNAL.findall(html), (path, EXTERNAL.findall(html))
        assets |= set(ASSET.findall(html))
    assert "/static/ninja/swagger-ui-bundle.js" in assets
    for asset in sorted(assets):
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert b"".join(served.streaming_content if served.streaming else [served.content])


def test_checks_name_a_project_without_throttling_or_with_swagger_from_a_cdn():
    from taskdeck.security_checks import check_security

    assert check_security() == []
    apps = [app for app in settings.INSTALLED_APPS if app != "ninja"]
    with override_settings(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]):
        assert [m.id for m in check_security()] == ["taskdeck.W030"]
    with override_settings(INSTALLED_APPS=apps):
        assert [m.id for m in check_security()] == ["taskdeck.W031"]


def test_up_serves_static_files_in_a_project_without_whitenoise():
    """taskdeck/web.py: whitenoise when the project has it, Django's staticfiles handler otherwise."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test import RequestFactory

    from taskdeck import web

    gc.unfreeze()  # the import froze this test process's objects, as it does the server's
    assert not isinstance(web.load(), StaticFilesHandler)  # the reference project: whitenoise
    without = [m for m in settings.MIDDLEWARE if m != web.WHITENOISE]
    with override_settings(MIDDLEWARE=without):
        application = web.load()
        assert isinstance(application, StaticFilesHandler)
        environ = RequestFactory().get("/static/taskdeck/dashboard.css").environ
        body: list[bytes] = []
        statuses: list[str] = []
        for chunk in application(environ, lambda status, headers, *args: statuses.append(status)):
            body.append(chunk)
        assert statuses == ["200 OK"] and b"".join(body)


@pytest.mark.parametrize("module", ["core.wsgi", "taskdeck.web"])
def test_the_served_application_leaves_start_up_objects_out_of_collections(module):
    """The WSGI modules gunicorn serves (the deploy recipes' ``core.wsgi``, ``taskdeck up``'s
    ``taskdeck.web``) freeze what start-up built (``gc.freeze()``): a full collection then
    goes through what requests leave behind, not through Django and the project."""
    counts = "[gc.get_freeze_count(), len(gc.get_objects())]"
    code = f"import gc, json; import {module}; print(json.dumps({counts}))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "core.settings"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    frozen, tracked = json.loads(out.stdout.strip().splitlines()[-1])
    assert frozen > 10 * tracked, (frozen, tracked)
