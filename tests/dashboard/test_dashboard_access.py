"""Who may see and do what: login, the read-only role, CSRF, permissions; pages when a service is down."""

from __future__ import annotations

import ast
import io
import json

import pytest
from celery import current_app
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from taskdeck.dashboard.bootstrap import ensure_local_admin
from taskdeck.models import AuditEntry, TaskRun
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = ["overview", "tasks", "failures", "queues", "workers", "audit", "status", "retry-group-confirm"]


def failed_run(task_id: str = "t-1", **fields) -> TaskRun:
    now = timezone.now()
    values = {
        "name": "catalog.tasks.import_feed",
        "state": "FAILURE",
        "state_at": now.timestamp(),
        "queue": "default",
        "args": "('ftp://example.com/feed.xml',)",
        "kwargs": "{}",
        "exception": "ValueError(\"feed URL must be http(s), got 'ftp://example.com/feed.xml'\")",
        "traceback": "Traceback (most recent call last):\n  ...\nValueError: feed URL must be http(s)",
        "first_seen_at": now,
        "sent_at": now,
        "finished_at": now,
        **fields,
    }
    if "payload" not in fields:
        # As the publisher captures it (taskdeck.payloads): the arguments as JSON.
        args, kwargs = ast.literal_eval(values["args"]), ast.literal_eval(values["kwargs"] or "{}")
        values["payload"] = json.dumps(
            {"args": list(args), "kwargs": kwargs, "truncated": False, "redacted": False}
        )
    return TaskRun.objects.create(task_id=task_id, **values)


def logged_in(username: str, enforce_csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf)
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_is_sent_to_login(client, name):
    response = client.get(reverse(f"taskdeck:{name}"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("taskdeck:login") + "?next=")


def test_a_live_part_whose_session_ended_sends_the_page_to_login(client):
    response = client.get(
        reverse("taskdeck:status"),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/taskdeck/queues/",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("taskdeck:login") + "?next=%2Ftaskdeck%2Fqueues%2F"


def test_anonymous_cannot_reach_task_pages_or_post(client):
    run = failed_run()
    for url in (
        reverse("taskdeck:task", args=[run.task_id]),
        reverse("taskdeck:workflow", args=[run.task_id]),
    ):
        assert client.get(url).status_code == 302
    response = client.post(reverse("taskdeck:retry", args=[run.task_id]))
    assert response.status_code in (302, 403)
    assert not AuditEntry.objects.exists()


def test_login_turns_away_non_staff(client, accounts):
    response = client.post(reverse("taskdeck:login"), {"username": "clerk", "password": PASSWORD})
    assert response.status_code == 200
    assert "may not use the dashboard" in response.content.decode()
    assert client.get(reverse("taskdeck:overview")).status_code == 302  # still anonymous
    response = client.post(reverse("taskdeck:login"), {"username": "viewer", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("taskdeck:overview")


def test_staff_without_the_view_permission_is_refused(django_user_model):
    django_user_model.objects.create_user("plainstaff", password=PASSWORD, is_staff=True)
    client = logged_in("plainstaff")  # Django's own login (the admin's), not the dashboard's form
    response = client.get(reverse("taskdeck:overview"))
    assert response.status_code == 403 and "Can view the taskdeck dashboard" in response.content.decode()


def test_read_only_role_sees_everything_and_can_do_nothing(accounts):
    run = failed_run()
    viewer = logged_in("viewer")
    for name in PAGES:
        assert viewer.get(reverse(f"taskdeck:{name}")).status_code == 200, name
    page = viewer.get(reverse("taskdeck:task", args=[run.task_id])).content.decode()
    assert "read-only" in page and 'id="retry"' not in page and 'id="revoke"' not in page
    for url in (
        reverse("taskdeck:retry", args=[run.task_id]),
        reverse("taskdeck:revoke", args=[run.task_id]),
        reverse("taskdeck:purge", args=["default"]),
        reverse("taskdeck:pool", args=["w1@host"]),
        reverse("taskdeck:shutdown", args=["w1@host"]),
        reverse("taskdeck:retry-group"),
    ):
        response = viewer.post(url, {"delta": "1"})
        assert response.status_code == 403, url
        assert "permission" in response.content.decode()
    # Each refusal is in the audit log (docs/dashboard.md): who, what, on what.
    refused = AuditEntry.objects.filter(action="refused", ok=False, username="viewer")
    assert refused.count() == 6 and not AuditEntry.objects.exclude(action="refused").exists()
    assert {e.detail["action"] for e in refused} == {"retry", "revoke", "purge", "control"}
    assert refused.filter(target=run.task_id).count() == 2 and refused.filter(target="w1@host").count() == 2
    operator_page = logged_in("operator").get(reverse("taskdeck:task", args=[run.task_id])).content.decode()
    assert 'id="retry"' in operator_page and "read-only" not in operator_page


def test_post_without_csrf_token_is_refused(accounts, broker):
    run = failed_run()
    operator = logged_in("operator", enforce_csrf=True)
    response = operator.post(reverse("taskdeck:retry", args=[run.task_id]))
    assert response.status_code == 403 and "CSRF" in response.content.decode()
    assert not AuditEntry.objects.exists()
    # The same request with the token from the page goes through.
    operator.get(reverse("taskdeck:task", args=[run.task_id]))
    token = operator.cookies["csrftoken"].value
    response = operator.post(reverse("taskdeck:retry", args=[run.task_id]), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert AuditEntry.objects.get().action == "retry"


def test_actions_are_post_only(accounts):
    run = failed_run()
    operator = logged_in("operator")
    assert operator.get(reverse("taskdeck:retry", args=[run.task_id])).status_code == 405
    assert operator.get(reverse("taskdeck:purge", args=["default"])).status_code == 405


def test_hostile_values_are_escaped(accounts):
    payload = "<script>alert(1)</script>"
    run = failed_run(args=f"('{payload}',)", exception=f"ValueError('{payload}')", traceback=payload)
    page = logged_in("viewer").get(reverse("taskdeck:task", args=[run.task_id])).content.decode()
    assert payload not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    listing = logged_in("viewer").get(reverse("taskdeck:tasks")).content.decode()
    assert payload not in listing


def test_database_down_shows_a_banner_not_a_500(accounts):
    viewer = logged_in("viewer")
    settings = connection.settings_dict
    saved = settings["PORT"]
    connection.close()
    settings["PORT"] = 1  # nothing listens there
    try:
        response = viewer.get(reverse("taskdeck:tasks"))
        fragment = viewer.get(reverse("taskdeck:status"), HTTP_HX_REQUEST="true")
    finally:
        connection.close()
        settings["PORT"] = saved
    assert response.status_code == 503 and response["Retry-After"] == "10"
    assert "Database unreachable" in response.content.decode()
    assert fragment.status_code == 503 and "<html" not in fragment.content.decode()
    assert viewer.get(reverse("taskdeck:tasks")).status_code == 200  # back


def test_broker_down_shows_a_banner(accounts, broker):
    viewer = logged_in("viewer")
    conf = current_app.conf
    ok = viewer.get(reverse("taskdeck:status")).content.decode()
    assert "Broker unreachable" not in ok
    saved = conf.broker_url
    conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens; the health check makes a new connection
    try:
        banner = viewer.get(reverse("taskdeck:status")).content.decode()
        page = viewer.get(reverse("taskdeck:queues"))
    finally:
        conf.broker_url = saved
    assert "Broker unreachable" in banner and "127.0.0.1:1" in banner
    assert page.status_code == 200  # the recorded history still shows


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_local_admin_only_on_the_embedded_default(django_user_model):
    out = io.StringIO()
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        assert ensure_local_admin(out) is None
    assert "no local admin" in out.getvalue() and not django_user_model.objects.exists()
    embedded = {"default": {**connection.settings_dict, "ENGINE": "django.db.backends.sqlite3"}}
    with override_settings(CELERY_BROKER_URL="redis+socket:///tmp/x/redis.sock", DATABASES=embedded):
        credentials = ensure_local_admin(out)
        assert credentials is not None and credentials.password in out.getvalue()
        assert ensure_local_admin(io.StringIO()) is None  # once only
    admin = django_user_model.objects.get(username=credentials.username)
    assert admin.is_superuser and admin.is_staff and admin.check_password(credentials.password)
    client = Client()
    assert client.login(username=credentials.username, password=credentials.password)
    assert client.get(reverse("taskdeck:overview")).status_code == 200


def test_models_in_the_admin(admin_client):
    failed_run()
    models = (
        "taskrun", "worker", "taskrollup", "taskrollupquarter", "taskrolluphour", "queuesample", "auditentry",
        "apitoken", "alertincident",
    )  # fmt: skip
    for model in models:
        response = admin_client.get(reverse(f"admin:taskdeck_{model}_changelist"))
        assert response.status_code == 200, model
    assert admin_client.get(reverse("admin:taskdeck_taskrun_add")).status_code == 403  # the recorder's rows
    response = admin_client.post(reverse("admin:taskdeck_apitoken_add"), {"name": "grafana"}, follow=True)
    (message,) = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    token = message.split("'grafana': ", 1)[1].split(" ", 1)[0]
    api = Client().get(reverse("taskdeck-api:list_tasks"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.status_code == 200 and api.json()["items"][0]["task_id"] == "t-1"
