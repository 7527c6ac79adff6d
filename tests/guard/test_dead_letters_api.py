"""Dead letters are listed, shown raw, requeued when valid, deleted: API and dashboard, permission, audit."""

from __future__ import annotations

import base64
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from taskdeck.models import ApiToken, AuditEntry, DeadLetter
from tests.support.messages import call_body, publish, task_headers
from tests.support.probe import PROBE_ARGS, record
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

API = "/taskdeck/api/dead-letters"


def account(django_user_model, username: str, *perms: str) -> Client:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="taskdeck", codename__in=perms)
    )
    client = Client()
    client.force_login(user)
    return client


def test_a_message_for_a_task_deployed_later_is_requeued_and_runs(
    broker, start_worker, probe, django_user_model
):
    from celery import current_app

    old = start_worker(["default"], concurrency=1)  # without the probe: its tasks are unknown here
    early, hello = str(uuid.uuid4()), str(uuid.uuid4())
    publish(current_app, call_body("late"), headers=task_headers(early))
    publish(current_app, b'"hello"', headers=task_headers(hello))
    wait_for(
        lambda: DeadLetter.objects.filter(task_id__in=[early, hello]).count() == 2, 60, "two dead letters"
    )
    old.stop()
    start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env)  # the code is deployed

    viewer = account(django_user_model, "viewer", "view_dashboard")
    operator = account(django_user_model, "operator", "view_dashboard", "manage_deadletter")
    token = ApiToken.issue("scraper")
    listed = viewer.get(API).json()["items"]
    assert {item["task_id"] for item in listed} == {early, hello}
    letters = {item["task_id"]: item["id"] for item in listed}
    detail = Client().get(f"{API}/{letters[hello]}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert base64.b64decode(detail["body_base64"]) == b'"hello"' and detail["body_text"] == '"hello"'
    assert detail["headers"]["task"] == record.name and detail["properties"]["routing_key"] == "default"
    assert detail["reason"] == f"task {record.name!r} is not registered on this worker"
    assert viewer.get(f"{API}/999999").status_code == 404 and viewer.get(f"{API}/nope").status_code == 404

    # Acting needs the permission, a session (tokens only read), and a valid message.
    assert viewer.post(f"{API}/{letters[early]}/requeue").status_code == 403
    for client in (Client(), Client(enforce_csrf_checks=True)):  # said as it is, not "CSRF check Failed"
        by_token = client.post(f"{API}/{letters[early]}/requeue", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert by_token.status_code == 403 and "API tokens only read" in by_token.json()["detail"]
    assert viewer.delete(f"{API}/{letters[hello]}").status_code == 403
    refused = operator.post(f"{API}/{letters[hello]}/requeue")
    assert refused.status_code == 409, refused.content
    assert "cannot be requeued: the body must be a list of three items" in refused.json()["message"]

    sent = operator.post(f"{API}/{letters[early]}/requeue")
    assert sent.status_code == 200, sent.content
    new_id = sent.json()["detail"]["task_id"]
    assert new_id != early and sent.json()["detail"]["original_id"] == early
    started = wait_for(lambda: probe.started(new_id), 60, "the requeued task to run")
    assert started["routing_key"] == "default"
    assert not DeadLetter.objects.filter(pk=letters[early]).exists()

    assert operator.delete(f"{API}/{letters[hello]}").status_code == 200
    assert not DeadLetter.objects.exists()
    audit = list(AuditEntry.objects.order_by("id").values_list("action", "target", "ok", "username"))
    assert audit == [
        ("refused", f"dead letter {letters[early]}", False, "viewer"),
        ("refused", f"dead letter {letters[hello]}", False, "viewer"),
        ("requeue", f"dead letter {letters[hello]}", False, "operator"),
        ("requeue", f"dead letter {letters[early]}", True, "operator"),
        ("delete_letter", f"dead letter {letters[hello]}", True, "operator"),
    ]


def test_the_dashboard_lists_shows_and_acts_on_dead_letters(django_user_model, broker):
    from taskdeck import deadletter

    deadletter.store(
        "message",
        "the body must be a list of three items",
        source="w1@host",
        headers={"task": record.name, "id": "t-1"},
        body=b'"hello"\xff',
        task_id="t-1",
        task=record.name,
        properties={"routing_key": "default", "exchange": "default", "content_type": "application/json"},
    )
    deadletter.store(
        "event", "timestamp 'abc' is not a number", source="recorder", body='{"timestamp": "abc"}'
    )
    message, event = DeadLetter.objects.order_by("id")
    viewer = account(django_user_model, "viewer", "view_dashboard")
    operator = account(django_user_model, "operator", "view_dashboard", "manage_deadletter")

    page = viewer.get(reverse("taskdeck:dead-letters")).content.decode()
    assert (
        "the body must be a list of three items" in page
        and "timestamp &#x27;abc&#x27; is not a number" in page
    )
    only_events = viewer.get(reverse("taskdeck:dead-letters"), {"kind": "event"}).content.decode()
    assert "timestamp" in only_events and "three items" not in only_events
    shown = viewer.get(reverse("taskdeck:dead-letter", args=[message.pk])).content.decode()
    assert "&quot;hello&quot;\\xff" in shown and 'id="requeue"' not in shown  # read-only: no buttons
    shown = operator.get(reverse("taskdeck:dead-letter", args=[message.pk])).content.decode()
    assert 'id="requeue" disabled' in shown and "Requeue unavailable: the body cannot be decoded" in shown
    assert (
        "Requeue unavailable: only task messages can be requeued"
        in operator.get(reverse("taskdeck:dead-letter", args=[event.pk])).content.decode()
    )

    assert viewer.post(reverse("taskdeck:dead-letter-delete", args=[event.pk])).status_code == 403
    assert operator.post(reverse("taskdeck:dead-letter-requeue", args=[message.pk])).status_code == 302
    assert operator.post(reverse("taskdeck:dead-letter-delete", args=[event.pk])).status_code == 302
    assert list(DeadLetter.objects.all()) == [message]
    assert list(AuditEntry.objects.order_by("id").values_list("action", "ok")) == [
        ("refused", False),
        ("requeue", False),
        ("delete_letter", True),
    ]
