"""Bad input gets a clear error and loses nothing (DESIGN.md, "Quality bar").

- an argument JSON cannot encode fails at enqueue, naming the task and the
  argument, and nothing reaches the queue;
- an argument list too large for one message (``TASKDECK["MAX_MESSAGE_BYTES"]``,
  1 MiB by default) fails at enqueue the same way, naming the largest argument;
- a pickled message is refused by the worker, logged with its task id, not
  run, and recorded as REJECTED; the worker keeps serving;
- so are a body that is not JSON, a content type the worker does not accept
  and a message that is not a task message; each one is listed by the JSON API;
- a task name no worker knows is stored as FAILURE under its name and
  logged; the worker keeps serving;
- a worker does not start on settings the system checks call errors.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid

import pytest
import redis
from celery import chain, current_app
from django.conf import settings
from django.test import override_settings
from django_celery_results.models import TaskResult
from kombu import Exchange
from kombu.exceptions import EncodeError

from orders.tasks import charge_payment
from reports.tasks import collect_sales, render_report
from taskdeck.errors import MessageTooLargeError, TaskArgumentError
from tests.support.probe import PROBE_ARGS, record
from tests.support.services import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step
STEPS = (0, 3, 6, 9)


def depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue``, every priority sub-queue included."""
    return sum(client.llen(queue + (f"{SEP}{step}" if step else "")) for step in STEPS)


def test_unencodable_argument_fails_at_enqueue_naming_task_and_argument(broker):
    client = redis.Redis.from_url(broker)

    with pytest.raises(TaskArgumentError) as positional:
        charge_payment.delay(1, {100, 200})
    assert str(positional.value) == (
        "cannot enqueue task 'orders.tasks.charge_payment': positional argument 1 of type set "
        "cannot be encoded as JSON (Object of type set is not JSON serializable); nothing was sent"
    )
    assert isinstance(positional.value, EncodeError)  # code catching kombu's error still works
    assert (positional.value.task, positional.value.argument) == (
        "orders.tasks.charge_payment",
        "positional argument 1",
    )

    with pytest.raises(TaskArgumentError) as keyword:
        charge_payment.apply_async((2, 100), {"gateway_failures": object()})
    assert "'orders.tasks.charge_payment'" in str(keyword.value)
    assert "keyword argument 'gateway_failures' of type object" in str(keyword.value)

    # A later step of a chain is checked too, and named, before anything is sent.
    with pytest.raises(TaskArgumentError) as chained:
        chain(collect_sales.s("2024-03-01"), render_report.s(title={"Sales"})).apply_async()
    assert "'reports.tasks.render_report'" in str(chained.value)
    assert "keyword argument 'title' of type set" in str(chained.value)

    assert depth(client, "high_priority") == 0
    assert depth(client, "medium_priority") == 0
    # The same calls with good arguments do reach those queues: the depths above are real.
    charge_payment.delay(1, 100)
    chain(collect_sales.s("2024-03-01"), render_report.s(title="ok")).apply_async()
    assert (depth(client, "high_priority"), depth(client, "medium_priority")) == (1, 1)


def publish_raw(
    body: bytes,
    content_type: str,
    headers: dict | None,
    task_id: str | None = None,
    queue: str = "default",
) -> None:
    """Publish ``body`` as it is, with ``content_type`` and ``headers``, to ``queue``."""
    properties = {"correlation_id": task_id} if task_id else {}
    with current_app.connection_for_write() as conn:
        conn.Producer().publish(
            body,
            exchange=Exchange(queue, type="direct"),
            routing_key=queue,
            headers=headers or {},
            content_type=content_type,
            content_encoding="binary",
            **properties,
        )


def task_headers(task_id: str, name: str = record.name) -> dict:
    return {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "retries": 0}


def publish_pickled(task_id: str, queue: str = "default") -> None:
    """Publish a Celery protocol-2 message for a real task, its body pickled, to ``queue``."""
    body = pickle.dumps(((f"pickled-{task_id}",), {}, {"callbacks": None, "errbacks": None}))
    publish_raw(body, "application/x-python-serialize", task_headers(task_id), task_id, queue)


def test_pickled_message_is_refused_logged_and_the_worker_keeps_serving(
    broker,
    start_worker,
    start_recorder,  # noqa: F811
    probe,
):
    start_recorder()  # the shipped default on Redis: it writes the result rows from the records
    worker = start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env)
    client = redis.Redis.from_url(broker)
    pickled_id = str(uuid.uuid4())
    publish_pickled(pickled_id)
    good = record.delay("after the pickled one")  # same queue: delivered after it

    wait_for(lambda: probe.started(good.id), 60, "the good task to run after the pickled message")
    wait_for(
        lambda: "Refusing to deserialize untrusted content of type pickle" in worker.output(),
        30,
        f"the refusal in {worker.log}",
    )
    log = worker.output()
    assert "Received invalid task message" in log
    assert "The message has been ignored and discarded" in log
    assert probe.started(pickled_id) is None, "the pickled message must never run"
    # Recorded under its id (taskdeck.rejections), where Celery's log line does not name it.
    row = wait_for(lambda: TaskResult.objects.filter(task_id=pickled_id).first(), 30, "the REJECTED row")
    assert (row.status, row.task_name) == ("REJECTED", record.name)
    assert "MessageRejected" in row.result and "application/x-python-serialize" in row.result
    wait_for(lambda: f"[{pickled_id}] from queue 'default' refused" in worker.output(), 30, "taskdeck's line")
    assert good.get(timeout=60) == "after the pickled one"
    # Rejected, not left behind: nothing waits in the queue, nothing is held unacknowledged.
    assert depth(client, "default") == 0
    assert client.hlen("unacked") == 0
    assert worker.alive()


def test_unknown_task_name_is_recorded_as_failure_and_the_worker_keeps_serving(
    broker,
    start_worker,
    start_recorder,  # noqa: F811
    probe,
):
    start_recorder()
    worker = start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env)
    client = redis.Redis.from_url(broker)
    ghost = current_app.send_task("billing.tasks.ghost", args=(42,))
    good = record.delay("after the unknown one")

    row = wait_for(
        lambda: TaskResult.objects.filter(task_id=ghost.id, status="FAILURE").first(),
        60,
        "the unknown task's FAILURE row",
    )
    assert row.task_name == "billing.tasks.ghost"  # found by name, not only by id
    assert "NotRegistered" in row.result and "billing.tasks.ghost" in row.result
    with pytest.raises(Exception, match="billing.tasks.ghost") as raised:
        ghost.get(timeout=30)
    assert type(raised.value).__name__ == "NotRegistered"

    assert good.get(timeout=60) == "after the unknown one"
    wait_for(
        lambda: f"task billing.tasks.ghost[{ghost.id}] from queue 'default'" in worker.output(), 30, "log"
    )
    log = worker.output()
    assert "is not registered on this worker: stored as FAILURE (NotRegistered)" in log
    assert "Received unregistered task of type 'billing.tasks.ghost'" in log
    assert probe.started(ghost.id) is None
    assert depth(client, "default") == 0
    assert client.hlen("unacked") == 0
    assert worker.alive()


def test_oversized_arguments_fail_at_enqueue_naming_task_and_argument(broker):
    client = redis.Redis.from_url(broker)
    limit = settings.TASKDECK.get("MAX_MESSAGE_BYTES", 1024 * 1024)
    assert limit == 1024 * 1024  # the documented default: the project does not set it

    rows = ["x" * 1000] * 1100  # about 1.1 MB as JSON
    with pytest.raises(MessageTooLargeError) as raised:
        render_report.delay({"rows": rows})
    message = str(raised.value)
    assert message.startswith("cannot enqueue task 'reports.tasks.render_report': positional argument 0 ")
    assert "over the limit of 1,048,576 (TASKDECK['MAX_MESSAGE_BYTES'])" in message
    assert message.endswith("; nothing was sent")
    assert isinstance(raised.value, TaskArgumentError)  # and so kombu's EncodeError
    assert raised.value.size > raised.value.limit == limit

    # In a canvas: the step carrying the data is named.
    with pytest.raises(MessageTooLargeError) as chained:
        chain(collect_sales.s("2024-03-01"), render_report.s(title="t" * 1_100_000)).apply_async()
    assert "keyword argument 'title' of 'reports.tasks.render_report' (in its canvas)" in str(chained.value)
    assert depth(client, "medium_priority") == 0, "nothing was sent"

    # Under the limit it goes through; the limit is a setting, read when sending.
    render_report.delay({"rows": rows[:1000]})
    assert depth(client, "medium_priority") == 1
    small = override_settings(TASKDECK={**settings.TASKDECK, "MAX_MESSAGE_BYTES": 2000})
    with small, pytest.raises(MessageTooLargeError, match="over the limit of 2,000"):
        render_report.delay({"rows": ["x" * 100] * 30})
    with override_settings(TASKDECK={**settings.TASKDECK, "MAX_MESSAGE_BYTES": None}):
        render_report.delay({"rows": rows})
    assert depth(client, "medium_priority") == 2


def test_refused_messages_are_recorded_and_listed_and_the_worker_keeps_serving(
    broker,
    start_worker,
    start_recorder,  # noqa: F811
    probe,
    staff_client,
):
    """Every kind of message a worker cannot run leaves a record the API lists, under its task id."""
    start_recorder()
    worker = start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env)
    client = redis.Redis.from_url(broker)
    ids = {kind: str(uuid.uuid4()) for kind in ("pickle", "malformed", "yaml", "not_a_task")}
    publish_pickled(ids["pickle"])
    publish_raw(
        b'[["half a message"], {', "application/json", task_headers(ids["malformed"]), ids["malformed"]
    )
    publish_raw(b"- a\n- b\n", "application/x-yaml", task_headers(ids["yaml"]), ids["yaml"])
    # No task header and a JSON body without a task name: not a task message at all.
    publish_raw(json.dumps({"hello": "world"}).encode(), "application/json", None, ids["not_a_task"])
    ghost = current_app.send_task("billing.tasks.ghost", args=(42,))
    good = record.delay("after the bad ones")

    assert good.get(timeout=60) == "after the bad ones"
    rows = {
        kind: wait_for(
            lambda task_id=task_id: TaskResult.objects.filter(task_id=task_id).first(), 30, f"{kind} row"
        )
        for kind, task_id in ids.items()
    }
    assert {kind: row.status for kind, row in rows.items()} == dict.fromkeys(ids, "REJECTED")
    assert "body cannot be decoded" in rows["malformed"].result
    assert "application/x-yaml" in rows["yaml"].result
    assert "not a task message" in rows["not_a_task"].result
    log = worker.output()
    for kind, task_id in ids.items():
        assert f"[{task_id}] from queue 'default' refused" in log, kind

    def listed():
        page = staff_client.get("/taskdeck/api/tasks", {"state": "REJECTED,FAILURE", "limit": 50}).json()
        return {item["task_id"]: item for item in page["items"]}

    runs = wait_for(lambda: (r := listed()) and set(ids.values()) | {ghost.id} <= set(r) and r, 60, "the API")
    assert {runs[task_id]["state"] for task_id in ids.values()} == {"REJECTED"}
    assert "refused" in runs[ids["pickle"]]["exception"]
    assert runs[ghost.id]["state"] == "FAILURE" and runs[ghost.id]["name"] == "billing.tasks.ghost"
    # Nothing was run, nothing is left behind, the worker still serves.
    assert all(probe.started(task_id) is None for task_id in ids.values())
    assert depth(client, "default") == 0 and client.hlen("unacked") == 0
    assert worker.alive()


def test_a_worker_does_not_start_on_a_route_to_an_unknown_lane(services_env):
    """``manage.py check`` reports it (tests/test_checks.py); the worker refuses to start on it too."""
    env = {**services_env, "DJANGO_SETTINGS_MODULE": "tests.support.bad_lane_settings"}
    argv = [sys.executable, "-m", "celery", "-A", "core", "worker", "-Q", "default", "-c", "1", "-l", "info"]
    finished = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    assert "taskdeck: the worker does not start, its settings have errors:" in finished.stderr
    assert "(taskdeck.E002) CELERY_TASK_ROUTES[0]['orders.tasks.*']: unknown lane 'urgent'" in finished.stderr
    assert "ready." not in finished.stdout + finished.stderr
