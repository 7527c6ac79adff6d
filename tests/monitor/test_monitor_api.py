"""Access rules of the API and /metrics, the OpenAPI schema, the terminal view, retention."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone
from rich.console import Console

from taskdeck.models import (
    ALL_TASKS,
    ROLLUPS,
    ApiToken,
    QueueSample,
    TaskRollup,
    TaskRollupHour,
    TaskRollupQuarter,
    TaskRun,
    Worker,
)
from taskdeck.monitor.retention import Retention
from taskdeck.terminal import render, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_needs_a_dashboard_session_or_token(client, django_user_model, recorded):
    assert client.get("/taskdeck/api/tasks").status_code == 401
    assert client.get("/taskdeck/api/openapi.json").status_code == 401
    user = django_user_model.objects.create_user("plain", password="x")
    client.force_login(user)
    assert client.get("/taskdeck/api/tasks").status_code == 401  # logged in but not staff
    user.is_staff = True
    user.save()
    assert client.get("/taskdeck/api/tasks").status_code == 401  # staff, without view_dashboard
    client.logout()
    token = ApiToken.issue("ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert len(client.get("/taskdeck/api/tasks", **auth).json()["items"]) == 8
    assert client.get("/taskdeck/api/tasks", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    schema = client.get("/taskdeck/api/openapi.json", **auth).json()
    paths = {"/taskdeck/api/tasks", "/taskdeck/api/tasks/{task_id}", "/taskdeck/api/health"}
    assert paths <= set(schema["paths"])


def test_metrics_by_token_or_network(client, recorded):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    with override_settings(TASKDECK={"MONITOR": {"TOKENS": ["scrape-me"], "METRICS_NETWORKS": []}}):
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
        body = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-me")
        assert body.status_code == 200
        line = 'taskdeck_tasks_total{name="catalog.tasks.import_feed",queue="default",state="FAILURE"} 1.0'
        assert line in body.content.decode()


def test_metrics_label_values_are_capped_so_forged_names_cannot_flood_the_scrape(client, recorded):
    """2,000 forged task names (from events anyone on the broker can send): the scrape stays small.

    The names first seen keep their series; the later ones are summed under
    "(other)", so no counter of a kept series ever goes down.
    """
    from taskdeck.models import TaskTotal

    real = TaskTotal.objects.values("name").distinct().count()
    assert 0 < real < 20
    TaskTotal.objects.bulk_create(
        TaskTotal(name=f"forged.{i:04d}", queue=f"q{i % 3}", state="SUCCESS", count=1) for i in range(2000)
    )
    limit = {"MONITOR": {"METRICS_MAX_LABEL_VALUES": 20}}
    with override_settings(TASKDECK=limit):
        text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    totals = [line for line in text.splitlines() if line.startswith("taskdeck_tasks_total{")]
    names = {line.split('name="')[1].split('"')[0] for line in totals}
    assert len(names) == 21 and "(other)" in names
    assert 'name="catalog.tasks.import_feed",queue="default",state="FAILURE"} 1.0' in text  # seen first: kept
    other = [line for line in totals if 'name="(other)"' in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in other) == 2000 - (20 - real)
    with override_settings(TASKDECK={"MONITOR": {"METRICS_MAX_LABEL_VALUES": 5000}}):
        uncapped = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert len(uncapped) > 20 * len(text)  # what the cap saves: a series set per forged name


def test_search_and_health(staff_client, recorded):
    feed = TaskRun.objects.get(name="catalog.tasks.import_feed")
    by_id = staff_client.get("/taskdeck/api/tasks", {"q": feed.task_id}).json()["items"]
    assert [r["task_id"] for r in by_id] == [feed.task_id]
    by_name = staff_client.get("/taskdeck/api/tasks", {"q": "resize"}).json()["items"]
    assert {r["name"] for r in by_name} == {"catalog.tasks.resize_image"}
    future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    assert staff_client.get("/taskdeck/api/tasks", {"since": future}).json()["items"] == []
    assert staff_client.get("/taskdeck/api/tasks/nope").status_code == 404
    health = staff_client.get("/taskdeck/api/health").json()
    assert health["database"]["ok"] and health["workers"]["online"] == 1
    assert health["recorder"]["running"] is False and health["ok"] is False  # no recorder in this test


def test_recorders_under_other_names_count_for_health_banner_and_metrics(client, staff_client, recorded):
    """A deployment whose recorders run as --name east and --name west (none as "default")."""
    from taskdeck.models import RecorderState

    now = timezone.now()
    RecorderState.objects.create(name="east", heartbeat_at=now, lag=0.4, events=70, backlog=12)
    RecorderState.objects.create(name="west", heartbeat_at=now - dt.timedelta(hours=1), lag=0.1, events=30)
    health = staff_client.get("/taskdeck/api/health").json()["recorder"]
    assert (health["running"], health["ok"], health["lag"], health["events"]) == (True, True, 0.4, 100)
    assert {name: h["running"] for name, h in health["recorders"].items()} == {"east": True, "west": False}
    banner = staff_client.get("/taskdeck/status/").content.decode()
    assert "recorder is not running" not in banner.lower(), banner
    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    for line in (
        'taskdeck_recorder_up{recorder="east"} 1.0',
        'taskdeck_recorder_up{recorder="west"} 0.0',
        'taskdeck_recorder_events_total{recorder="east"} 70.0',
        'taskdeck_recorder_lag_seconds{recorder="west"} 0.1',
        'taskdeck_recorder_backlog{recorder="east"} 12.0',
    ):
        assert line in metrics, line
    assert 'taskdeck_recorder_backlog{recorder="west"}' not in metrics  # no records read there
    RecorderState.objects.all().delete()
    metrics = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'taskdeck_recorder_up{recorder="default"} 0.0' in metrics  # none at all: an alert can fire
    assert "recorder is not running" in staff_client.get("/taskdeck/status/").content.decode().lower()


def test_terminal_snapshot_renders_workers_queues_failures(recorded):
    by_priority = {"0": 3, "3": 1}
    QueueSample.objects.create(sampled_at=timezone.now(), queue="default", ready=4, by_priority=by_priority)
    console = Console(width=160, record=True)
    console.print(render(snapshot(window=3600)))
    text = console.export_text()
    assert "w1@h" in text and "online" in text
    assert "default" in text and "0:3 3:1" in text
    assert "catalog.tasks.import_feed" in text and "must be http(s)" in text


def test_retention_prunes_in_batches(recorded):
    now = timezone.now()
    old = now - dt.timedelta(days=30)
    TaskRun.objects.filter(name__startswith="catalog.").update(first_seen_at=old)
    for model in ROLLUPS:
        model.objects.filter(name__startswith="reports.").update(**{model.period_field: old})
    # The rows of every task too, with the same retention: minutes and quarters old, the hour kept.
    every = {model: ALL_TASKS[model].objects.count() for model in ROLLUPS}
    for model in ROLLUPS[:2]:
        ALL_TASKS[model].objects.update(**{model.period_field: old})
    # An hour that began before the cutoff but ends after it is kept: part of it is still retained.
    straddling = now - dt.timedelta(days=14, minutes=30)
    TaskRollupHour.objects.filter(name__startswith="catalog.").update(hour=straddling)
    ALL_TASKS[TaskRollupHour].objects.update(hour=straddling)
    done = Retention(runs=7 * 86400, rollups=14 * 86400, batch=2).prune()
    assert done == {
        "runs": 4,
        "rollups": 3,
        "quarter_rollups": 3,
        "hour_rollups": 3,
        "rollups_all": every[TaskRollup],
        "quarter_rollups_all": every[TaskRollupQuarter],
        "hour_rollups_all": 0,
    }
    assert every[TaskRollup] >= 1
    assert TaskRollupHour.objects.filter(hour=straddling).count() == 3
    assert ALL_TASKS[TaskRollupHour].objects.filter(hour=straddling).count() == every[TaskRollupHour] >= 1
    assert not TaskRollupQuarter.objects.filter(name__startswith="reports.").exists()
    assert not TaskRun.objects.filter(name__startswith="catalog.").exists()
    assert TaskRun.objects.count() == 4
    assert Worker.objects.count() == 1


def test_stats_read_the_charts_steps_from_the_coarse_rollups(staff_client, recorded):
    finished = TaskRun.objects.filter(state__in=["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]).count()
    for window, step, table in ((300, 60, "minute"), (86400, 900, "quarter"), (7 * 86400, 3600, "hour")):
        stats = staff_client.get("/taskdeck/api/stats", {"window": window}).json()
        assert (stats["step"], stats["finished"]) == (step, finished), table
        points = stats["series"]
        assert window // step <= len(points) <= window // step + 1
        assert sum(p["succeeded"] + p["failed"] for p in points) == stats["succeeded"] + stats["failed"]
        assert dt.datetime.fromisoformat(stats["since"]) <= timezone.now() - dt.timedelta(seconds=window)
    # The longest window, 90 days, in days: 91 points, not 130k minutes.
    stats = staff_client.get("/taskdeck/api/stats", {"window": 10**9}).json()
    assert (stats["window"], stats["step"], len(stats["series"])) == (90 * 86400, 86400, 91)
    assert stats["finished"] == finished
    # Only the coarse tables are read past 6 hours: without the minutes, the week's count is the same.
    ROLLUPS[0].objects.all().delete()
    caches["default"].clear()
    assert staff_client.get("/taskdeck/api/stats", {"window": 7 * 86400}).json()["finished"] == finished


def test_a_chart_of_every_task_reads_one_row_per_period_with_the_same_sums(staff_client, recorded):
    """Unfiltered, a chart reads the rollups of every task: the buckets it gets are those the rows
    per task name and queue add up to; a chart of one task name still reads the rows per task."""
    from taskdeck.monitor import series

    finished = TaskRun.objects.filter(state__in=["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]).count()
    names = set(TaskRollup.objects.values_list("name", flat=True))
    assert finished and len(names) > 1
    now = timezone.now().timestamp()
    for window in (3600, 86400, 7 * 86400):
        step = series.step_for(window)
        lo, hi = int(now - window) // step * step, (int(now) // step + 1) * step
        per_task = series._read(series.table_for(step), lo, hi, step, None, None)
        assert series._read(ALL_TASKS[series.table_for(step)], lo, hi, step, None, None) == per_task
        assert sum(b["succeeded"] + b["failed"] for b in per_task.values()) > 0
        # Without the rows per task, the chart of every task counts the same; one task's, nothing.
        series.table_for(step).objects.all().delete()
        caches["default"].clear()
        assert staff_client.get("/taskdeck/api/stats", {"window": window}).json()["finished"] == finished
        one = staff_client.get("/taskdeck/api/stats", {"window": window, "name": sorted(names)[0]}).json()
        assert one["finished"] == 0


def test_a_tasks_workflow_lists_each_run_in_brief_as_the_list_shows_it(staff_client):
    """``api/tasks/<id>``'s workflow: each run's ``WorkflowRun`` fields, valued as ``api/tasks``
    gives them (the lists are built from the columns unvalidated: up to 2,000 runs)."""
    from taskdeck.api.schemas import WORKFLOW_FIELDS

    now = timezone.now()

    def run(task_id: str, **links: str) -> None:
        TaskRun.objects.create(
            task_id=task_id,
            name="catalog.tasks.resize_image",
            state="SUCCESS",
            queue="low_priority",
            worker="w1@h",
            retries=1,
            first_seen_at=now,
            state_at=now.timestamp(),
            started_at=now - dt.timedelta(seconds=2),
            finished_at=now - dt.timedelta(seconds=1, microseconds=123456),
            runtime=0.875,
            args="(1,)",
            **links,
        )

    run("root-1", root_id="root-1")
    for i in range(3):
        run(f"member-{i}", parent_id="root-1", root_id="root-1", group_id="group-1")
    listed = {t["task_id"]: t for t in staff_client.get("/taskdeck/api/tasks").json()["items"]}
    brief = {i: {k: t[k] for k in WORKFLOW_FIELDS} for i, t in listed.items()}

    flow = staff_client.get("/taskdeck/api/tasks/member-1").json()["workflow"]
    assert flow["parent"] == brief["root-1"]
    assert flow["group"] == [brief[f"member-{i}"] for i in range(3)]
    assert flow["tree"] == [brief["root-1"], *(brief[f"member-{i}"] for i in range(3))]
    assert flow["children"] == []
    root = staff_client.get("/taskdeck/api/tasks/root-1").json()
    assert root["workflow"]["children"] == [brief[f"member-{i}"] for i in range(3)]
    assert root["args"] == "(1,)" and "args" not in flow["group"][0]


def test_run_pages_and_queue_samples_render_as_their_schemas_validate_them(staff_client, recorded):
    """``api/tasks`` and ``api/queues/<name>/samples`` render their rows unvalidated
    (``schemas.dumped``): the same bytes as ninja's validation of each row gives, for the
    recorded runs, a run with every nullable column null and one with each set, and samples
    with and without their counts."""
    from taskdeck import api as api_module
    from taskdeck.api import schemas
    from taskdeck.querysets import SAMPLE_FIELDS

    now = timezone.now()
    at = now - dt.timedelta(seconds=3, microseconds=250)
    TaskRun.objects.create(task_id="nulls", name="n", state="SENT", first_seen_at=now, state_at=0.0)
    TaskRun.objects.create(
        task_id="every-column",
        name="orders.tasks.charge",
        state="LOST",
        queue="high_priority",
        routing_key="high",
        priority=9,
        worker="w@h",
        args="(1, 'x')",
        kwargs="{'a': 1}",
        result="None",
        exception="KeyError('k')",
        retries=3,
        first_seen_at=at,
        sent_at=at,
        received_at=at,
        started_at=at,
        finished_at=now,
        wait_time=0.0,
        runtime=1.0,
        parent_id="p",
        root_id="r",
        group_id="g",
        reconstructed=True,
        lost_at=now,
        lost_worker="w@h",
        redeliver_at=now,
        stuck_at=at,
        stuck_reason="no consumer",
        state_at=now.timestamp(),
    )
    QueueSample.objects.create(queue="edge", sampled_at=now, ready=0, by_priority={})
    # PostgreSQL writes the time as text (QueueSampleQuerySet.newest): a whole second, and
    # under a millisecond, read as Django's encoder writes them.
    QueueSample.objects.create(queue="edge", sampled_at=now.replace(microsecond=0), ready=1, consumers=0)
    QueueSample.objects.create(
        queue="edge", sampled_at=at.replace(microsecond=999), ready=2, by_priority={"0": 2}, oldest_age=2.0
    )
    QueueSample.objects.create(
        queue="edge",
        sampled_at=at,
        ready=5,
        unacked=2,
        consumers=0,
        by_priority={"0": 2, "9": 3},
        oldest_age=1.5,
    )

    def rendered(data: object) -> bytes:
        return api_module.api.renderer.render(None, data, response_status=200).encode()

    runs = list(TaskRun.objects.order_by("-id"))
    assert len(runs) > 8
    page = staff_client.get("/taskdeck/api/tasks?limit=500")
    items = [schemas.TaskOut.model_validate(run).model_dump() for run in runs]
    assert page.content == rendered({"items": items, "next": None})

    samples = list(QueueSample.objects.filter(queue="edge").order_by("-sampled_at"))
    assert len(samples) == 4
    declared = set(api_module._declared())
    validated = [
        schemas.QueueOut.model_validate(
            api_module._queue([getattr(s, n) for n in SAMPLE_FIELDS], declared)
        ).model_dump()
        for s in samples
    ]
    assert staff_client.get("/taskdeck/api/queues/edge/samples").content == rendered(validated)
