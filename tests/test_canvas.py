"""The notes' TASK CHAINING and TASK GROUPING on real workers, results in PostgreSQL.

Every step leaves a django-celery-results row with the extended fields
(``CELERY_RESULT_EXTENDED``): task name, arguments as the step received them,
the worker that ran it, and its state.
"""

from __future__ import annotations

import ast
import json

import pytest
from celery import chain
from django_celery_results.models import TaskResult

from catalog.tasks import build_gallery, resize_all
from reports.tasks import collect_sales, daily_report, render_report
from tests.support.probe import PROBE_ARGS
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ["default", "high_priority", "medium_priority", "low_priority", "notifications"]
DAY = "2024-03-01"


@pytest.fixture
def worker(start_worker, probe):
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
