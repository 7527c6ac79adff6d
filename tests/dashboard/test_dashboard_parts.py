"""The dashboard's parts without a browser: the workflow layout, chart series, search."""

from __future__ import annotations

import datetime as dt
import math
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
from taskdeck.models import TaskRollup, TaskRollupAll, TaskRollupHour, TaskRollupQuarter, TaskRun
from taskdeck.monitor import histogram, series
from taskdeck.monitor.rollups import Rollups
from taskdeck.monitor.subscribers import RunChange
from tests.dashboard.test_dashboard_access import failed_run

#: The columns a rollup row copies into the row of every task.
FIELDS = ("minute", "succeeded", "failed", "runtime_hist", "wait_hist")


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
    # One task name and queue: the rows of every task are the same ones.
    every = [TaskRollupAll(**{f: getattr(r, f) for f in FIELDS}, name="", queue="") for r in rows]
    TaskRollupAll.objects.bulk_create(every)
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
    assert series.window_series(3600, name="a", now=now)["summary"] == first["summary"]


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


@pytest.mark.django_db(transaction=True)
def test_an_id_prefix_finds_its_run_and_nothing_else():
    failed_run("5f3a9c1e-0b7d-4c2e-9a41-7d2b8e6f0c11")
    failed_run("5f3a9c1e-ffff-4c2e-9a41-7d2b8e6f0c12", name="notifications:send_sms")
    failed_run("5f3b0000-0b7d-4c2e-9a41-7d2b8e6f0c13")
    failed_run("50%_off-1")
    failed_run("50xyoff-2")

    def found(q, **filters):
        return {r.task_id for r in TaskRun.objects.search_page(None, 50, q=q, **filters)}

    assert found("5f3a9c1e") == {
        "5f3a9c1e-0b7d-4c2e-9a41-7d2b8e6f0c11",
        "5f3a9c1e-ffff-4c2e-9a41-7d2b8e6f0c12",
    }
    assert found("5f3a9c1e-ff") == {"5f3a9c1e-ffff-4c2e-9a41-7d2b8e6f0c12"}
    assert found("5f3a9c1e", name="notifications:send_sms") == {"5f3a9c1e-ffff-4c2e-9a41-7d2b8e6f0c12"}
    assert found("5F3A9C1E") == set()  # ids are compared as they are written
    assert found("5f3") == set()  # under ID_PREFIX_MIN characters: a name's part only
    assert found("50%_") == {"50%_off-1"}  # LIKE's wildcards are plain characters
    # The id prefix and the name part of one search, merged newest first.
    failed_run("send-0001", name="catalog.tasks.resize_image")
    assert found("send") == {"5f3a9c1e-ffff-4c2e-9a41-7d2b8e6f0c12", "send-0001"}


@pytest.mark.django_db(transaction=True)
def test_id_prefix_search_from_the_dashboard_and_the_api(admin_client):
    failed_run("5f3a9c1e-0b7d-4c2e-9a41-7d2b8e6f0c11")
    page = admin_client.get("/taskdeck/tasks/", {"q": "5f3a9c1e"}).content.decode()
    assert "5f3a9c1e-0b7d-4c2e-9a41-7d2b8e6f0c11" in page
    items = admin_client.get("/taskdeck/api/tasks", {"q": "5f3a9c1e"}).json()["items"]
    assert [r["task_id"] for r in items] == ["5f3a9c1e-0b7d-4c2e-9a41-7d2b8e6f0c11"]


@pytest.mark.django_db(transaction=True)
def test_workflow_and_graph_read_parent_root_and_group():
    # A task that sent a chord: three header tasks (group g), a callback, then a chain link after it.
    failed_run("top", state="SUCCESS", root_id="top")
    for i in range(3):
        failed_run(f"h{i}", state="SUCCESS", parent_id="top", root_id="top", group_id="g")
    failed_run("cb", state="SUCCESS", parent_id="h2", root_id="top", group_id="g")
    failed_run("after", parent_id="cb", root_id="top")
    failed_run("alone", state="SUCCESS", root_id="alone")  # its own root: in no workflow
    runs = TaskRun.objects
    flow = runs.workflow(runs.get(task_id="h1"))
    assert [r.task_id for r in flow["parent"]] == ["top"]
    assert [r.task_id for r in flow["group"]] == ["h0", "h1", "h2", "cb"]
    assert [r.task_id for r in flow["tree"]] == ["top", "h0", "h1", "h2", "cb", "after"]
    assert [r.task_id for r in runs.workflow(runs.get(task_id="top"))["children"]] == ["h0", "h1", "h2"]
    assert [r.task_id for r in runs.workflow(runs.get(task_id="alone"))["tree"]] == ["alone"]
    assert [r.task_id for r in runs.graph(runs.get(task_id="after"))] == [
        "top",
        "h0",
        "h1",
        "h2",
        "cb",
        "after",
    ]
    # Past the limit: the oldest runs of the workflow.
    assert [r.task_id for r in runs.graph(runs.get(task_id="h2"), limit=3)] == ["top", "h0", "h1"]
    assert [r.task_id for r in runs.workflow(runs.get(task_id="h2"), limit=2)["tree"]] == ["top", "h0"]


@pytest.mark.django_db(transaction=True)
def test_failure_groups_of_settled_hours_come_from_the_cache_and_leave_on_retry(django_assert_num_queries):
    from taskdeck.models import AuditEntry
    from taskdeck.monitor import failures

    caches[conf.monitor()["SERIES_CACHE"]].clear()
    now = timezone.now()
    rng = random.Random(5)
    for i in range(120):
        at = now - dt.timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        exception = rng.choice(["ValueError('bad')", "KeyError('k')", "TimeLimitExceeded(300.0)"])
        failed_run(f"f-{i}", name=rng.choice(["a", "b"]), exception=exception, finished_at=at)
    since = now - dt.timedelta(days=2)

    def uncached():
        retried = AuditEntry.objects.filter(action="retry", ok=True).values("target")
        groups = TaskRun.objects.exclude(task_id__in=retried).failure_groups(since=since)
        return [{k: g[k] for k in ("name", "exc_type", "count", "last_id", "last_at")} for g in groups]

    expected = uncached()
    assert sum(g["count"] for g in expected) > 50
    assert failures.failure_groups(since, now=now) == expected
    with django_assert_num_queries(3):  # the retries' version, the first part-hour, the open hour
        assert failures.failure_groups(since, now=now) == expected
    # Two days hold a whole day of 24 hours: kept added up beside its hours, and read so.
    span = failures.HOUR * failures.CHUNK
    day = math.ceil(since.timestamp() / span) * span  # the first whole day of the window
    entry = caches[conf.monitor()["SERIES_CACHE"]].get(f"taskdeck:failures:1:all:0:{day}")
    assert entry[failures.ALL] == failures._merged([entry[h] for h in range(day, day + span, failures.HOUR)])
    wider = now - dt.timedelta(days=3)
    expected_wider = [
        {k: g[k] for k in ("name", "exc_type", "count", "last_id", "last_at")}
        for g in TaskRun.objects.failure_groups(since=wider)
    ]
    assert failures.failure_groups(wider, now=now) == expected_wider
    assert failures.failure_groups(wider, now=now) == expected_wider
    # A retried run leaves its group at once, settled hour or not.
    oldest = TaskRun.objects.filter(finished_at__gte=since).order_by("finished_at").first()
    AuditEntry.objects.create(username="u", action="retry", target=oldest.task_id, ok=True)
    after = failures.failure_groups(since, now=now)
    assert after == uncached() != expected
    assert sum(g["count"] for g in after) == sum(g["count"] for g in expected) - 1


def test_workflow_nodes_are_escaped_links_named_with_their_state():
    from taskdeck.templatetags.taskdeck_ui import workflow_nodes

    runs = [run("a&1", name='x.tasks:<b>"bold"</b>'), run("b", parent="a&1", state="FAILURE", name="")]
    out = workflow_nodes(graph.build(runs), "b")
    assert "<b>" not in out and "&lt;b&gt;&quot;bold&quot;&lt;/b&gt;" in out
    assert 'href="/taskdeck/tasks/a%261/"' in out and 'data-task="a&amp;1"' in out
    assert out.count('aria-current="page"') == 1 and 'aria-label="(unknown) failure' in out
    assert 'data-state="FAILURE"' in out and "s-bad" in out
