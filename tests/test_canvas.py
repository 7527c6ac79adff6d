"""The notes' TASK CHAINING and TASK GROUPING on real workers, results in PostgreSQL.

Every step leaves a django-celery-results row with the extended fields
(``CELERY_RESULT_EXTENDED``): task name, arguments as the step received them,
the worker that ran it, and its state.
"""

from __future__ import annotations

import ast
import json
import pickle
import uuid

import pytest
import redis
from celery import chain, chord, group
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult
from django_celery_results.models import ChordCounter, TaskResult

from catalog.tasks import build_gallery, resize_all
from reports.tasks import collect_sales, daily_report, render_report
from taskdeck.results import WRITE_BEHIND
from tests.support.probe import PROBE_ARGS
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
DAY = "2024-03-01"
DIRECT = "taskdeck.results.backend:DatabaseBackend"
RECORD = "taskdeck.results.record:RecordBackend"


@pytest.fixture
def worker(start_worker, start_recorder, probe):
    # The shipped default on Redis: the recorder writes the result rows from the records.
    start_recorder()
    return start_worker(QUEUES, concurrency=2, args=PROBE_ARGS, env=probe.env)


def row(task_id: str) -> TaskResult:
    """The step's final row. Celery sends a chain's next step before it stores the step's own
    result, so a later step can finish (and ``get()`` return) a moment before an earlier row is written."""
    wait_for(
        lambda: TaskResult.objects.filter(task_id=task_id, status__in=["SUCCESS", "FAILURE"]).exists(),
        30,
        f"the result row of {task_id}",
    )
    return TaskResult.objects.get(task_id=task_id)


def stored(row: TaskResult, field: str):
    """A JSON field of the row, decoded (the result, or the repr of the arguments)."""
    return json.loads(getattr(row, field))


def received_args(row: TaskResult) -> tuple:
    """The positional arguments the step received, from the row's ``task_args`` (their repr).

    A list or a tuple, depending on how the message carried them: compared as a tuple.
    """
    return tuple(ast.literal_eval(stored(row, "task_args")))


def assert_extended(row: TaskResult, name: str, worker: str) -> None:
    assert (row.task_name, row.status, row.worker) == (name, "SUCCESS", worker)
    assert row.task_args is not None and row.task_kwargs is not None
    assert row.date_done is not None


def test_chain_passes_each_result_as_the_next_first_argument(worker):
    result = daily_report(DAY).apply_async()
    report = result.get(timeout=90)

    render_id, summarize_id, collect_id = result.id, result.parent.id, result.parent.parent.id
    collect, summarize, render = row(collect_id), row(summarize_id), row(render_id)
    assert_extended(collect, "reports.tasks.collect_sales", worker.hostname)
    assert_extended(summarize, "reports.tasks.summarize", worker.hostname)
    assert_extended(render, "reports.tasks.render_report", worker.hostname)

    sales = stored(collect, "result")
    summary = stored(summarize, "result")
    assert received_args(collect) == (DAY,)
    assert received_args(summarize) == (sales,)  # collect_sales' result, first and only argument
    assert received_args(render) == (summary,)  # summarize's result, then the signature's kwargs
    assert ast.literal_eval(stored(render, "task_kwargs")) == {"title": f"Sales {DAY}"}
    assert summary["total_cents"] == sum(sale["quantity"] * sale["cents"] for sale in sales)
    assert report.splitlines()[0] == f"Sales {DAY}"
    assert report.splitlines()[-1].split() == ["total", f"{summary['total_cents'] / 100:.2f}"]


def test_immutable_signature_ignores_the_parent_result(worker):
    fixed = {"per_sku": {"SKU-X": 150}, "total_cents": 150}
    result = chain(collect_sales.s(DAY), render_report.si(fixed, title="Fixed")).apply_async()
    report = result.get(timeout=90)

    collect, render = row(result.parent.id), row(result.id)
    assert_extended(collect, "reports.tasks.collect_sales", worker.hostname)
    assert_extended(render, "reports.tasks.render_report", worker.hostname)
    assert received_args(render) == (fixed,)  # not collect_sales' list of sales
    assert report == "Fixed\n=====\nSKU-X          1.50\ntotal          1.50"


def test_group_gathers_every_result_in_order(worker):
    result = resize_all([3, 1, 2], 320).apply_async()
    assert result.get(timeout=90) == [
        {"image_id": 3, "width": 320, "height": 240},
        {"image_id": 1, "width": 320, "height": 240},
        {"image_id": 2, "width": 320, "height": 240},
    ]
    for child, image_id in zip(result.results, [3, 1, 2], strict=True):
        resized = row(child.id)
        assert_extended(resized, "catalog.tasks.resize_image", worker.hostname)
        assert received_args(resized) == (image_id, 320)


def test_chord_calls_back_once_with_every_result(worker, probe):
    image_ids = [4, 1, 3, 2]
    result = build_gallery(7, image_ids, width=640).apply_async()
    assert result.get(timeout=90) == {"gallery_id": 7, "images": [1, 2, 3, 4], "pixels": 4 * 640 * 480}

    header_ids = [child.id for child in result.parent.results]
    for task_id in header_ids:
        assert_extended(row(task_id), "catalog.tasks.resize_image", worker.hostname)
    callback = row(result.id)
    assert_extended(callback, "catalog.tasks.publish_gallery", worker.hostname)
    (images,) = received_args(callback)
    assert sorted(image["image_id"] for image in images) == [1, 2, 3, 4]
    assert ast.literal_eval(stored(callback, "task_kwargs")) == {"gallery_id": 7}

    starts = probe.starts()
    assert [s["id"] for s in starts if s["task"] == "catalog.tasks.publish_gallery"] == [result.id]
    callback_at = next(i for i, s in enumerate(starts) if s["id"] == result.id)
    # Called back only after every header task had started (and so finished: it needs their results).
    assert {s["id"] for s in starts[:callback_at]} >= set(header_ids)
    assert TaskResult.objects.filter(task_name="catalog.tasks.publish_gallery").count() == 1


# --- Canvas regressions on taskdeck's result backend (docs/canvas.md) -------------------------
#
# Each found by Celery's own canvas suite (make test-celery), each failing or hanging
# without its fix in taskdeck.results.canvas.


@pytest.fixture
def canvas_worker(start_worker):
    return start_worker(["default"], concurrency=2, args=["-I", "tests.canvas_tasks,tests.results.tasks"])


def test_chain_after_a_chord_fails_as_soon_as_a_header_task_fails(canvas_worker, broker):
    from tests.canvas_tasks import total
    from tests.results.tasks import add, fail, wait_for_key

    key = f"release-{uuid.uuid4().hex}"
    failing = chord([fail.s("header"), wait_for_key.si(key)], total.s())
    inner = chain(failing, chord([add.s(1), add.s(2)], total.s()))
    res = group(inner, add.si(1, 1))()
    # get() raises on the failed header task (a parent of the chain's result) while the
    # header's other task still runs: the chain after the chord is failed already.
    with pytest.raises((ValueError, ChordError), match="header"):
        res.get(timeout=60)
    assert redis.Redis.from_url(broker).get(key) is None  # not released: the header is unfinished
    assert res.results[0].state == "FAILURE"
    assert "Dependency" in str(res.results[0].result)
    redis.Redis.from_url(broker).set(key, 1)
    body = AsyncResult(failing.body.id if failing.body.id else res.results[0].parent.parent.id)
    wait_for(
        lambda: body.state == "FAILURE", 60, "the chord's callback to be failed once its header finished"
    )
    assert isinstance(body.result, ChordError) and "raised ValueError('header')" in str(body.result)


def test_chord_header_entry_ending_in_a_group_counts_each_of_its_tasks(canvas_worker, broker):
    from tests.canvas_tasks import echo
    from tests.results.tasks import add, wait_for_key

    nested = group(add.si(1, 100), chain(add.si(1, 200), group(add.si(1, 1000), add.si(1, 2000))))
    # Celery's canvas suite: a group between two tasks becomes a chord.
    assert chain(add.si(1, 0), nested, add.si(1, 10))().get(timeout=60) == 11

    # Two header results, three tasks that complete the chord: the third one still runs
    # when the first two have completed it (django-celery-results' count was used up then).
    key = f"release-{uuid.uuid4().hex}"
    header = group(add.si(1, 100), chain(add.si(1, 200), group(add.si(1, 1000), wait_for_key.si(key))))
    res = chord(header, echo.s())()
    first, (second, third) = res.parent.results[0], res.parent.results[1].results
    wait_for(lambda: first.ready() and second.ready(), 60, "the header's first two tasks")
    assert third.state in ("PENDING", "STARTED")
    redis.Redis.from_url(broker).set(key, 1)
    # The callback gets the header's results with their structure, as on Celery's Redis backend.
    assert res.get(timeout=60) == [101, [1001, "released"]]
    assert not ChordCounter.objects.exists()


def test_generator_chord_header_is_sent_as_it_is_generated(canvas_worker, broker):
    from tests.canvas_tasks import append, total

    key = f"ran-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker)

    def header():
        for i in range(4):
            if i == 3:  # the first tasks were sent (and ran) before the generator was done
                wait_for(
                    lambda: client.llen(key) >= 1, 60, "a header task to run while the header is generated"
                )
            yield append.s(key, i)

    assert chord(header(), total.s())().get(timeout=60) == 0 + 1 + 2 + 3
    assert sorted(int(v) for v in client.lrange(key, 0, -1)) == [0, 1, 2, 3]
    assert not ChordCounter.objects.exists()


def test_get_raises_the_failed_header_task_error_and_the_callback_names_it(canvas_worker):
    from tests.canvas_tasks import echo
    from tests.results.tasks import add, fail

    res = chord([add.s(1, 2), fail.s("in the header")], echo.s())()
    with pytest.raises(ValueError, match="in the header"):  # the task's own error, not the ChordError
        res.get(timeout=60)
    failed = next(r for r in res.parent.results if r.state == "FAILURE")
    wait_for(lambda: res.state == "FAILURE", 60, "the callback's FAILURE")
    assert str(res.result) == f"Dependency {failed.id} raised ValueError('in the header')"


def test_get_reports_a_refused_message_instead_of_waiting(canvas_worker):
    from taskdeck.errors import MessageRejected
    from tests.test_bad_input import publish_raw, task_headers

    task_id = str(uuid.uuid4())
    body = pickle.dumps(((1, 2), {}, {"callbacks": None, "errbacks": None}))
    headers = task_headers(task_id, "tests.results.tasks.add")
    publish_raw(body, "application/x-python-serialize", headers, task_id)
    with pytest.raises(MessageRejected, match="application/x-python-serialize"):
        AsyncResult(task_id).get(timeout=60)


def test_group_chained_after_a_failed_task_fails_each_of_its_tasks(canvas_worker):
    from tests.results.tasks import add, fail

    res = chain(add.si(1, 1), fail.si("before the group"), group(add.s(1), add.s(2))).delay()
    with pytest.raises(ValueError, match="before the group"):
        res.get(timeout=60)
    assert [r.state for r in res.results] == ["FAILURE", "FAILURE"]


@pytest.mark.parametrize(
    "backend_path", [DIRECT, WRITE_BEHIND, RECORD], ids=["direct", "writebehind", "record"]
)
def test_group_get_raises_a_revoked_task_while_another_still_runs(start_worker, broker, backend_path):
    from celery import current_app
    from celery.exceptions import TaskRevokedError
    from celery.utils.imports import symbol_by_name

    from tests.results.tasks import add, wait_for_key

    start_worker(
        ["default"],
        concurrency=2,
        args=["-I", "tests.canvas_tasks,tests.results.tasks"],
        env={"CELERY_BACKEND": backend_path},
    )
    backend = symbol_by_name(backend_path)(app=current_app)
    key = f"release-{uuid.uuid4().hex}"
    revoked = add.si(1, 1).set(task_id=str(uuid.uuid4()))
    AsyncResult(revoked.id, backend=backend).revoke(wait=True, timeout=10)
    res = group(wait_for_key.si(key), revoked, add.si(2, 2)).apply_async()
    res = GroupResult(res.id, [AsyncResult(r.id, backend=backend) for r in res.results])
    # The group can no longer succeed: get() reports the REVOKED member as soon as it is
    # stored, as Celery's Redis backend does, not after the members before it have finished.
    with pytest.raises(TaskRevokedError):
        res.get(timeout=60)
    assert res.results[0].state in ("PENDING", "STARTED")  # still waiting for its key
    redis.Redis.from_url(broker).set(key, 1)
    assert res.get(timeout=60, propagate=False)[::2] == ["released", 4]
    assert isinstance(res.results[1].result, TaskRevokedError)
