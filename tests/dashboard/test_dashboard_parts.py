"""The dashboard's parts without a browser: the workflow layout, chart series, search."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskdeck import conf
from taskdeck.dashboard import graph
from taskdeck.models import TaskRollup, TaskRollupHour, TaskRollupQuarter, TaskRun
from taskdeck.monitor import histogram, series
from taskdeck.monitor.rollups import Rollups
from taskdeck.monitor.subscribers import RunChange
from tests.dashboard.test_dashboard_access import failed_run


def run(task_id, parent="", group="", state="SUCCESS", name="t"):
    return SimpleNamespace(
        task_id=task_id, parent_id=parent, group_id=group, root_id="", state=state, name=name, runtime=0.1
    )


def test_chord_layout_joins_every_header_task_to_the_callback():
    # A chain step, then a chord whose callback's parent is the header task that finished last.
    runs = [
        run("a"),
        run("h1", parent="a", group="g"),
        run("h2", parent="a", group="g"),
        run("h3", parent="a", group="g"),
        run("cb", parent="h2", group="g"),
        run("after", parent="cb"),
    ]
    drawn = graph.build(runs)
    edges = {(x.run.task_id, y.run.task_id) for x, y in drawn.edges}
    assert edges == {
        ("a", "h1"),
        ("a", "h2"),
        ("a", "h3"),
        ("h1", "cb"),
        ("h2", "cb"),
        ("h3", "cb"),
        ("cb", "after"),
    }
    cols = {n.run.task_id: n.col for n in drawn.nodes}
    assert cols == {"a": 0, "h1": 1, "h2": 1, "h3": 1, "cb": 2, "after": 3}
    (frame,) = drawn.frames
    assert frame.label == "chord header · 3 tasks"
    assert len(drawn.paths()) == 7 and all(p["d"].startswith("M") for p in drawn.paths())


@pytest.mark.django_db(transaction=True)
def test_series_adds_up_the_rollups_and_caches_settled_buckets(django_assert_max_num_queries):
    now = timezone.now().replace(second=30, microsecond=0)
    rows = []
    for minutes_ago in range(0, 180):
        minute = (now - dt.timedelta(minutes=minutes_ago)).replace(second=0)
        rows.append(
            TaskRollup(
                minute=minute,
                name="a",
                queue="q",
                succeeded=2,
                failed=minutes_ago % 2,
                runtime_hist={histogram.bucket(0.1): 2},
                wait_hist={histogram.bucket(0.01): 2},
            )
        )
    TaskRollup.objects.bulk_create(rows)
    first = series.window_series(3600, now=now)
    assert first["step"] == 60 and len(first["points"]) == 60
    assert first["summary"]["succeeded"] == 120 and first["summary"]["failed"] == 30
    assert abs(first["summary"]["runtime"]["p50"] - 0.1) / 0.1 < 0.08
    again = series.window_series(3600, now=now)
    assert again == first
    # Settled buckets come from the cache: the second read asks only for the open minutes.
    with django_assert_max_num_queries(1):
        series.window_series(3600, now=now)
    six = series.window_series(6 * 3600, now=now)
    assert six["step"] == 300 and six["summary"]["succeeded"] == 360
    assert series.window_series(3600, name="other", now=now)["summary"]["finished"] == 0


@pytest.mark.django_db(transaction=True)
def test_series_reads_the_coarsest_rollups_that_fit_and_adds_up_the_same(monkeypatch):
    """Every window from the rollups the recorder wrote: the same points as from the minute rows."""
    now = timezone.now()
    rng = random.Random(11)
    runs = [
        {
            "state": rng.choice(["SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "REVOKED"]),
            "finished_ts": round(now.timestamp() - rng.uniform(1, 8 * 86400), 6),
            "name": rng.choice(["a", "b"]),
            "queue": rng.choice(["q", "r"]),
            "runtime": rng.lognormvariate(-2, 1),
            "wait_time": rng.lognormvariate(-4, 1),
            "retries": rng.choice([0, 0, 1]),
        }
        for _ in range(3000)
    ]
    Rollups().on_changes([RunChange(before=None, after=run) for run in runs])
    cache = caches[conf.monitor()["SERIES_CACHE"]]
    windows = (3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
    tables = [series.table_for(series.step_for(w)) for w in windows]
    assert tables == [TaskRollup, TaskRollup, TaskRollupQuarter, TaskRollupHour, TaskRollupHour]
    for window, table in zip(windows, tables, strict=True):
        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            got = series.window_series(window, name="a", now=now)
        read = {
            t for q in queries.captured_queries for t in re.findall(r'"(taskdeck_taskrollup\w*)"', q["sql"])
        }
        assert read == {table._meta.db_table}
        step = got["step"]
        expected = Counter(
            (int(r["finished_ts"] // step * step), r["state"]) for r in runs if r["name"] == "a"
        )
        column = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}
        assert got["summary"]["finished"] > 0
        for point in got["points"]:
            start = int(point["t"].timestamp())
            assert {c: point[c] for c in column.values()} == {
                c: expected[(start, s)] for s, c in column.items()
            }
        cache.clear()
        with monkeypatch.context() as patch:
            patch.setattr(series, "table_for", lambda step: TaskRollup)
            assert series.window_series(window, name="a", now=now) == got


@pytest.mark.django_db(transaction=True)
def test_search_by_id_or_part_of_a_name():
    failed_run("id-1")
    failed_run("id-2", name="notifications:send_sms")
    assert [r.task_id for r in TaskRun.objects.search(q="id-1")] == ["id-1"]
    assert [r.task_id for r in TaskRun.objects.search(q="SEND_")] == ["id-2"]
    assert list(TaskRun.objects.search(q="nothing-like-it")) == []
    assert TaskRun.objects.distinct_values("name") == ["catalog.tasks.import_feed", "notifications:send_sms"]
    groups = TaskRun.objects.failure_groups()
    assert {(g["name"], g["exc_type"], g["count"]) for g in groups} == {
        ("catalog.tasks.import_feed", "ValueError", 1),
        ("notifications:send_sms", "ValueError", 1),
    }
