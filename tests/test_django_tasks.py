"""Django's Tasks framework on taskdeck's Celery workers (``taskdeck.tasks.CeleryBackend``).

Real workers, Redis, RabbitMQ and PostgreSQL: tasks are enqueued through the
framework's own API (``task.enqueue()``, ``.using()``), run by ``celery -A
core worker`` processes, and read back with ``get_result()`` and ``refresh()``
from the results table. Priority is counted in tasks: how many of a backlog
of priority -100 tasks started before one priority-100 task sent after it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from django_celery_results.models import TaskResult as Row
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from taskdeck import brokers
from taskdeck.errors import ConfigurationError, TaskArgumentError
from taskdeck.lanes import lanes_for
from taskdeck.tasks import compat, priority
from tests.support import dtasks
from tests.support.dtasks import DTASK_ARGS
from tests.support.probe import Probe
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
BACKLOG = 30
Status = compat.TaskResultStatus


def run_coroutine(function: Any) -> Any:
    """``async_to_sync(function)()`` on a thread of its own.

    The browser tests' session-wide Playwright keeps an event loop running on
    the main thread, where ``async_to_sync`` refuses to run.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(async_to_sync(function)).result()


def finished(result: Any, timeout: float = 60) -> Any:
    """``result`` refreshed until it is finished."""

    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_for(done, timeout, f"Django task {result.task.module_path} {result.id} to finish")
    return result


def ready_depth(queue: str) -> int:
    """Messages waiting in ``queue`` on the test's Redis, every priority step counted."""
    with current_app.connection_for_read() as conn:
        return brokers.for_url(current_app.conf.broker_url).queue_depths(conn, [queue])[0].ready


# --- round trips on Redis ----------------------------------------------------


def test_round_trip_every_status_and_the_fields_of_the_result(start_worker, probe):
    worker = start_worker(QUEUES, concurrency=2, args=DTASK_ARGS, env=probe.env)

    # READY from the moment enqueue() returns: the row exists before the message.
    key = uuid.uuid4().hex
    waiting = dtasks.wait.enqueue(key)
    assert waiting.status == Status.READY and waiting.enqueued_at is not None
    # RUNNING while the worker holds it (STARTED is stored once it ran 50 ms).
    wait_for(
        lambda: dtasks.wait.get_result(waiting.id).status == Status.RUNNING, 60, "the waiting task to run"
    )
    running = dtasks.wait.get_result(waiting.id)
    assert running.started_at is not None and running.finished_at is None
    assert running.worker_ids == [worker.hostname]
    with pytest.raises(ValueError, match="not finished"):
        _ = running.return_value
    probe.release(key)
    assert finished(waiting).status == Status.SUCCESSFUL and waiting.return_value == key

    # SUCCESSFUL: the return value, arguments, worker and timestamps.
    added = dtasks.add.enqueue(2, 3, scale=2)
    fetched = dtasks.add.get_result(added.id)  # READY, RUNNING or done by now: the worker is idle
    assert (fetched.args, fetched.kwargs, fetched.enqueued_at) == ([2, 3], {"scale": 2}, added.enqueued_at)
    finished(added)
    assert added.status == Status.SUCCESSFUL
    assert added.return_value == {"sum": 10, "pair": [2, 3]}
    assert added.worker_ids == [worker.hostname] and added.attempts == 1 and added.errors == []
    assert added.enqueued_at <= added.started_at <= added.finished_at
    again = dtasks.add.get_result(added.id)
    assert (again.args, again.kwargs, again.return_value) == ([2, 3], {"scale": 2}, added.return_value)

    # FAILED: the exception class and the traceback.
    failed = finished(dtasks.fail.enqueue("no such sku"))
    assert failed.status == Status.FAILED
    [error] = failed.errors
    assert error.exception_class is LookupError
    assert "LookupError: no such sku" in error.traceback
    assert "in fail\n    raise LookupError" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = failed.return_value

    # takes_context: the attempt and the result id, as the worker saw them.
    context = finished(dtasks.contextual.enqueue("ctx"))
    assert context.return_value == {"result_id": context.id, "attempt": 1, "tag": "ctx"}

    # Async tasks, aenqueue, aget_result, arefresh.
    async def run_async() -> Any:
        result = await dtasks.add_async.aenqueue(20, 22)
        fetched = await dtasks.add_async.aget_result(result.id)
        assert (fetched.id, fetched.args) == (result.id, [20, 22])
        return result

    async_result = run_coroutine(run_async)

    def async_done() -> bool:
        run_coroutine(async_result.arefresh)
        return async_result.is_finished

    wait_for(async_done, 60, "the async task")
    assert async_result.return_value == 42

    # Each ran as a Celery task of its own name, in the lane of priority 0 (medium).
    starts = {s["id"]: s for s in probe.starts()}
    assert starts[added.id]["task"] == "tests.support.dtasks.add"
    assert (starts[added.id]["routing_key"], starts[added.id]["priority"]) == ("medium_priority", 3)
    assert worker.alive()


def test_get_result_of_an_unknown_id_and_of_another_task(broker):
    with pytest.raises(compat.TaskResultDoesNotExist):
        dtasks.add.get_result(str(uuid.uuid4()))
    result = dtasks.record.enqueue("mine")  # no worker: it stays READY
    fetched = dtasks.record.get_result(result.id)
    assert (fetched.status, fetched.args, fetched.kwargs) == (Status.READY, ["mine"], {})
    assert fetched.enqueued_at == result.enqueued_at and fetched.worker_ids == []
    with pytest.raises(ValueError, match="not finished"):
        _ = fetched.return_value
    with pytest.raises(compat.TaskResultMismatch):
        dtasks.add.get_result(result.id)


def test_attempts_count_the_retries_the_result_backend_stored(broker):
    """A state stored by taskdeck's backend for a third attempt (two Celery retries) reads as attempts 3."""
    from types import SimpleNamespace

    from taskdeck.results import upsert

    result = dtasks.add.enqueue(1, 2)
    request = SimpleNamespace(
        id=result.id,
        task="tests.support.dtasks.add",
        retries=2,
        hostname="w1@test",
        delivery_info={"routing_key": "medium_priority"},
        argsrepr="[1, 2]",
        kwargsrepr="{}",
    )
    backend = current_app.backend
    upsert.upsert(Row, [backend.result_row(result.id, 3, "SUCCESS", None, request)])
    stored = dtasks.add.get_result(result.id)
    assert (stored.status, stored.return_value, stored.args) == (Status.SUCCESSFUL, 3, [1, 2])
    assert (stored.attempts, stored.worker_ids) == (3, ["w1@test"] * 3)


# --- run_after, queues, routes ----------------------------------------------


def test_run_after_is_the_eta_and_queue_name_and_routes_pick_the_queue(start_worker, probe):
    worker = start_worker(QUEUES, concurrency=2, args=DTASK_ARGS, env=probe.env)
    not_before = timezone.now() + dt.timedelta(seconds=1)
    later = dtasks.record.using(run_after=not_before).enqueue("later")
    named = dtasks.notify.enqueue("to the notifications queue")
    # orders.tasks.* goes to the medium lane's queue by the project's glob route; priority 50 picks
    # the high lane's message priority (0 on Redis) within it.
    from orders.tasks import send_receipt

    receipt = send_receipt.enqueue(1001, "ada@example.com")
    for result in (later, named, receipt):
        assert finished(result).status == Status.SUCCESSFUL, result.errors
    assert later.started_at >= not_before
    assert receipt.return_value == {
        "order_id": 1001,
        "to": "ada@example.com",
        "result_id": receipt.id,
        "attempt": 1,
    }
    starts = {s["id"]: s for s in probe.starts()}
    assert starts[named.id]["routing_key"] == "notifications"
    assert (starts[receipt.id]["task"], starts[receipt.id]["routing_key"]) == (
        "orders.tasks.send_receipt",
        "medium_priority",
    )
    assert starts[receipt.id]["priority"] == 0
    assert worker.alive()


def scripted() -> None:
    """Stands for a task defined in a script run directly."""


scripted.__module__ = "__main__"


def test_bad_tasks_and_arguments_are_refused_at_enqueue_and_nothing_is_sent(broker):
    with pytest.raises(compat.InvalidTask, match="defined in __main__"):
        compat.Task(func=scripted)
    with pytest.raises(compat.InvalidTask, match="Queue 'nowhere' is not valid"):
        dtasks.record.using(queue_name="nowhere")
    with pytest.raises(compat.InvalidTask, match="priority must be a whole number"):
        dtasks.record.using(priority=101)
    with pytest.raises(compat.InvalidTask, match="aware datetime"):
        dtasks.record.using(run_after=dt.datetime(2030, 1, 1))
    with pytest.raises(TaskArgumentError) as caught:
        dtasks.add.enqueue(1, b=timezone.now())
    message = str(caught.value)
    assert "'tests.support.dtasks.add'" in message and "keyword argument 'b'" in message
    assert "datetime" in message and "nothing was sent" in message
    assert isinstance(caught.value, TaskArgumentError)
    assert not Row.objects.exists()
    assert ready_depth("medium_priority") == 0


JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
BAD_LEAF = (
    st.sets(st.integers(), min_size=1, max_size=2)
    | st.just(object())
    | st.just(b"\xff\xfe")
    | st.just(dt.date(2026, 1, 1))
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.recursive(JSON_LEAF | BAD_LEAF, lambda c: st.lists(c, max_size=3), max_leaves=5)))
def test_arguments_either_round_trip_or_are_refused_whole(broker, args):
    """Generated arguments: each either reaches the message and the row as JSON, or nothing is sent."""
    before = Row.objects.count()
    try:
        result = dtasks.record.enqueue(*args)
    except TaskArgumentError as exc:
        assert "positional argument" in str(exc)
        assert Row.objects.count() == before
        return
    stored = dtasks.record.get_result(result.id)
    assert stored.args == compat.normalize_json(args) == result.args
    assert Row.objects.count() == before + 1


# --- transactions -------------------------------------------------------------


def test_enqueue_inside_a_transaction_sends_on_commit_and_never_on_rollback(start_worker, probe):
    with transaction.atomic():
        kept = dtasks.record.enqueue("committed")
        assert ready_depth("medium_priority") == 0, "sent before the transaction committed"
    assert ready_depth("medium_priority") == 1

    with pytest.raises(RuntimeError), transaction.atomic():
        dropped = dtasks.record.enqueue("rolled back")
        raise RuntimeError("roll back")
    assert ready_depth("medium_priority") == 1
    with pytest.raises(compat.TaskResultDoesNotExist):
        dtasks.record.get_result(dropped.id)

    tasks = {**settings.TASKS["default"], "OPTIONS": {"ENQUEUE_ON_COMMIT": False}}
    with override_settings(TASKS={"default": tasks}), transaction.atomic():
        at_once = dtasks.record.enqueue("at once")
        assert ready_depth("medium_priority") == 2

    start_worker(QUEUES, concurrency=1, args=DTASK_ARGS, env=probe.env)
    assert finished(kept).return_value == "committed"
    assert finished(at_once).return_value == "at once"
    started = [s["id"] for s in probe.starts()]
    assert sorted(started) == sorted([kept.id, at_once.id])


# --- priority that holds: counted in tasks ---------------------------------------------


@contextmanager
def enqueued_to(rabbitmq: str, app: Any) -> Iterator[dict[str, str]]:
    """``enqueue()`` publishes through ``app`` (a RabbitMQ vhost), with the lanes a RabbitMQ worker shares."""
    lanes = lanes_for(rabbitmq)
    previous = current_app._get_current_object()
    app.set_current()
    try:
        with override_settings(TASKDECK={**settings.TASKDECK, "LANES": lanes}):
            yield lanes
    finally:
        previous.set_current()


def overtaken(probe: Probe, app: Any) -> tuple[int, dict[str, Any]]:
    """How many of a backlog of priority -100 tasks started before a priority-100 task sent after it."""
    from tests.support.probe import block

    low, high = dtasks.record.using(priority=-100), dtasks.record.using(priority=100)
    return probe.overtaken(
        lambda key: block.apply_async((key,), queue=app.conf.task_default_queue).id,
        lambda: [low.enqueue(f"low-{i}").id for i in range(BACKLOG)],
        lambda: high.enqueue("high").id,
    )


def test_redis_priority_100_overtakes_a_priority_minus_100_backlog(start_worker, probe):
    worker = start_worker(QUEUES, concurrency=1, args=DTASK_ARGS, env=probe.env)
    ahead, high = overtaken(probe, current_app)
    assert ahead == 0, f"{ahead} of {BACKLOG} priority -100 tasks started before the priority-100 one"
    assert (high["task"], high["routing_key"], high["priority"]) == (
        "tests.support.dtasks.record",
        "high_priority",
        0,
    )
    assert worker.alive()


@pytest.mark.rabbitmq
def test_rabbitmq_priority_100_overtakes_a_priority_minus_100_backlog(
    start_amqp_worker, rabbitmq, rabbitmq_app, probe
):
    queues = ["default", *dict.fromkeys(lanes_for(rabbitmq).values())]
    worker = start_amqp_worker(queues, concurrency=1, args=DTASK_ARGS, env=probe.env)
    with enqueued_to(rabbitmq, rabbitmq_app) as lanes:
        ahead, high = overtaken(probe, rabbitmq_app)
    assert ahead == 0, f"{ahead} of {BACKLOG} priority -100 tasks started before the priority-100 one"
    assert (high["routing_key"], high["priority"]) == (lanes["high"], 9)
    assert worker.alive()


@pytest.mark.rabbitmq
def test_rabbitmq_round_trip_success_failure_context_and_run_after(
    start_amqp_worker, rabbitmq, rabbitmq_app, probe
):
    queues = ["default", *dict.fromkeys(lanes_for(rabbitmq).values()), "notifications"]
    worker = start_amqp_worker(queues, args=DTASK_ARGS, env=probe.env)
    with enqueued_to(rabbitmq, rabbitmq_app) as lanes:
        not_before = timezone.now() + dt.timedelta(seconds=1)
        added = dtasks.add.using(run_after=not_before).enqueue(4, 5)
        failed = dtasks.fail.enqueue("missing")
        context = dtasks.contextual.enqueue("amqp")
        with transaction.atomic():
            committed = dtasks.record.enqueue("after commit")
        for result in (added, failed, context, committed):
            finished(result)
    assert (added.status, added.return_value) == (Status.SUCCESSFUL, {"sum": 9, "pair": [4, 5]})
    assert added.started_at >= not_before and added.worker_ids == [worker.hostname]
    assert failed.status == Status.FAILED and failed.errors[0].exception_class is LookupError
    assert context.return_value == {"result_id": context.id, "attempt": 1, "tag": "amqp"}
    assert committed.return_value == "after commit"
    starts = {s["id"]: s for s in probe.starts()}
    # Priority 0: the medium lane, which shares the "lanes" queue on RabbitMQ, at its priority 6.
    assert (starts[added.id]["routing_key"], starts[added.id]["priority"]) == (lanes["medium"], 6)


# --- the mapping and its checks -------------------------------------------------------


def test_priority_thresholds_default_to_equal_parts_and_refuse_bad_options():
    lanes = ["high", "medium", "low"]
    table = priority.thresholds(None, lanes)
    assert table == {"high": 34, "medium": -33, "low": -100}
    assert [priority.lane_for(p, table) for p in (100, 34, 33, 0, -33, -34, -100)] == [
        "high",
        "high",
        "medium",
        "medium",
        "medium",
        "low",
        "low",
    ]
    custom = priority.thresholds({"high": 1, "low": -100}, lanes)
    assert [priority.lane_for(p, custom) for p in (1, 0)] == ["high", "low"]
    for bad, words in [
        ({"urgent": 50, "low": -100}, "'urgent'"),
        ({"high": 50, "low": -50}, "give the lowest lane -100"),
        ({"high": -50, "medium": 50, "low": -100}, "must fall"),
        ({"high": 500, "low": -100}, "whole number from -100 to 100"),
        ({"high": True, "low": -100}, "whole number"),
        ([50, -100], "must map lane names"),
    ]:
        with pytest.raises(ConfigurationError, match=words):
            priority.thresholds(bad, lanes)


@hsettings(max_examples=200, deadline=None)
@given(
    option=st.dictionaries(
        st.sampled_from(["high", "medium", "low", "urgent", ""]),
        st.integers(-150, 150) | st.booleans() | st.none() | st.text(max_size=3),
        max_size=4,
    ),
    wanted=st.integers(-100, 100),
)
def test_any_priority_lanes_option_is_refused_or_gives_every_priority_one_lane(option, wanted):
    """Generated PRIORITY_LANES: a clear ConfigurationError, or a table where each priority has one lane."""
    lanes = ["high", "medium", "low"]
    try:
        table = priority.thresholds(option, lanes)
    except ConfigurationError as exc:
        assert "PRIORITY_LANES" in str(exc)
        return
    lane = priority.lane_for(wanted, table)
    assert lane in option and option[lane] <= wanted
    higher = lanes[: lanes.index(lane)]
    assert all(option[h] > wanted for h in higher if h in option)


def test_the_backend_checks_its_options():
    from django.core.checks import run_checks

    tasks = {**settings.TASKS["default"], "OPTIONS": {"PRIORITY_LANES": {"high": 50}}}
    with override_settings(TASKS={"default": tasks}):
        ids = [m.id for m in run_checks()]
    assert "taskdeck.E101" in ids
    tasks = {**settings.TASKS["default"], "QUEUES": [*settings.TASKS["default"]["QUEUES"], "nowhere"]}
    with override_settings(TASKS={"default": tasks}):
        [unconsumed] = [m for m in run_checks() if m.id == "taskdeck.W103"]
    assert "nowhere" in unconsumed.msg and "high_priority" not in unconsumed.msg
    tasks = {**settings.TASKS["default"], "OPTIONS": {"PRIORITY": 1}}
    with override_settings(TASKS={"default": tasks}), pytest.raises(ConfigurationError, match="PRIORITY"):
        compat.task_backends["default"]
