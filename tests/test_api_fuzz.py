"""The JSON API fuzzed against its own OpenAPI schema (schemathesis): no input makes it fail.

The schema is the one the API serves (``/taskdeck/api/openapi.json``), read
with a token. Every operation gets generated requests, valid ones and ones
the schema forbids, against a database that holds a few runs, workers and
queue samples. Checked for each response: never a 5xx (a database error
included: the API answers those with 503), a content type the schema
declares, and, for the status codes it documents, a body that matches it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import schemathesis
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from taskdeck.models import QueueSample, TaskRun, Worker

TOKEN = "fuzz-token-" + "x" * 16
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
# Not status_code_conformance: the schema documents each operation's 200 only, while the API
# also answers 401 (no token), 404 (no such task), 422 (invalid parameters) and 503 (database down).
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


def seed() -> None:
    now = timezone.now()
    for i, state in enumerate(["SUCCESS", "FAILURE", "STARTED", "REJECTED", "RETRY"]):
        TaskRun.objects.create(
            task_id=f"run-{i}",
            name="orders.tasks.charge_payment" if i % 2 else "notifications:send_sms",
            state=state,
            state_at=now.timestamp(),
            queue="high_priority",
            args="(1, 100)",
            kwargs="{}",
            exception="ValueError('no')" if state == "FAILURE" else "",
            first_seen_at=now - dt.timedelta(seconds=60),
            sent_at=now - dt.timedelta(seconds=60),
            finished_at=now if state in ("SUCCESS", "FAILURE", "REJECTED") else None,
            runtime=0.5,
            root_id="run-0",
            parent_id="run-0" if i else "",
        )
    Worker.objects.create(hostname="lanes@host", online=True, last_heartbeat=now, concurrency=2)
    QueueSample.objects.create(queue="default", sampled_at=now, ready=3, unacked=1, by_priority={"0": 3})


@contextlib.contextmanager
def in_process(token: str) -> Iterator[None]:
    """Requests served in this process and transaction, as Django's test client serves them.

    The WSGI handler closes old database connections at each request's start
    and end; the test's connection holds its transaction, so it stays open.
    """
    monitor = {**settings.TASKDECK.get("MONITOR", {}), "TOKENS": [token]}
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        with override_settings(TASKDECK={**settings.TASKDECK, "MONITOR": monitor}):
            yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def served_schema() -> schemathesis.BaseSchema:
    """The schema as the API serves it to a token holder, bound to the project's WSGI application."""
    with in_process(TOKEN):
        return schemathesis.openapi.from_wsgi(
            "/taskdeck/api/openapi.json", get_wsgi_application(), headers=HEADERS
        )


pytestmark = pytest.mark.django_db
schema = served_schema()


@pytest.fixture(autouse=True)
def data_and_token(db, broker):  # a broker that answers: /health asks it
    seed()
    with in_process(TOKEN):
        yield


@schema.parametrize()
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_holds_to_its_schema_and_never_fails(case):
    case.call_and_validate(headers=HEADERS, checks=CHECKS)


# Beyond the schema: query strings of any shape and size, the same on every operation.
OPERATIONS = sorted(
    (path.replace("{task_id}", "run-1").replace("{name}", "default").replace("{letter_id}", "1"), ops)
    for path, ops in schema.raw_schema["paths"].items()
)
GET_PATHS = [path for path, ops in OPERATIONS if "get" in ops]
READS_QUERY = {
    path
    for path, ops in OPERATIONS
    if any(p["in"] == "query" for p in ops.get("get", {}).get("parameters", []))
}
NAMES = ["state", "name", "queue", "worker", "q", "since", "until", "after", "limit", "window", "x"]


@given(
    path=st.sampled_from(GET_PATHS),
    pairs=st.lists(st.tuples(st.sampled_from(NAMES), st.text(max_size=300)), max_size=30),
    padding=st.sampled_from([0, 0, 0, 990, 1500]),
)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_query_string_gets_an_answer_never_a_server_error(client, path, pairs, padding):
    """Parameters cross the HTTP boundary as text: a JSON answer under 500, whatever they are."""
    query = "&".join([*(f"{quote(k)}={quote(v)}" for k, v in pairs), *(f"pad{i}=1" for i in range(padding))])
    answer = client.get(f"{path}?{query}", HTTP_AUTHORIZATION=HEADERS["Authorization"])
    assert answer.status_code < 500, (path, pairs[:5], padding, answer.status_code, answer.content[:300])
    assert answer["Content-Type"].startswith("application/json"), answer["Content-Type"]
    if len(pairs) + padding > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS and path in READS_QUERY:
        assert answer.status_code == 400, (path, answer.status_code)
