"""The migrations match the models; 0003 and `rebuild-rollups` fill the coarse rollups from the minutes,
0013 the rollups of every task from those per task."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from taskdeck.models import TaskRollupHour
from tests.support import rollups

BEFORE = [("taskdeck", "0002_dashboard")]
AFTER = [("taskdeck", "0003_coarser_rollups")]


@pytest.mark.django_db
def test_no_model_change_without_its_migration():
    out = io.StringIO()
    try:
        call_command("makemigrations", "taskdeck", "--check", "--dry-run", stdout=out)
    except SystemExit:
        pytest.fail(f"a model changed without its migration: run makemigrations\n{out.getvalue()}")


@pytest.mark.django_db(transaction=True)
def test_the_coarse_rollups_are_filled_from_the_minutes_recorded_before():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        minute = executor.loader.project_state(BEFORE).apps.get_model("taskdeck", "TaskRollup")
        hour = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
        for i, minutes in enumerate((0, 1, 14, 15, 59, 60, 61, 150)):
            minute.objects.create(
                minute=hour + dt.timedelta(minutes=minutes),
                name="a" if i % 3 else "b",
                queue="q",
                succeeded=i + 1,
                failed=i % 2,
                retried=i,
                runtime_hist={"10": 1, str(20 + i): i + 1},
                wait_hist={"5": i + 1},
            )
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("taskdeck"))
    rollups.assert_coarse_rows_add_up()
    assert len(rollups.rows(TaskRollupHour)) == 5  # a and b at 9:00 and 10:00, a at 11:00


@pytest.mark.django_db(transaction=True)
def test_rebuild_rollups_recomputes_the_coarse_rows_from_the_minutes(capsys):
    from taskdeck.models import TaskRollup, TaskRollupQuarter
    from taskdeck.monitor.cli import main

    # Minutes written by a recorder that wrote no coarse rows, over four hours; one coarse row wrong.
    hour = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
    for i, minutes in enumerate((50, 61, 75, 119, 130, 200, 201, 239)):
        TaskRollup.objects.create(
            minute=hour + dt.timedelta(minutes=minutes),
            name="a" if i % 3 else "b",
            queue="q",
            succeeded=i + 1,
            failed=i % 2,
            runtime_hist={"10": 1, str(20 + i): i + 1},
            wait_hist={"5": i + 1},
        )
    TaskRollupQuarter.objects.create(quarter=hour + dt.timedelta(hours=2), name="a", queue="q", succeeded=99)
    oldest = TaskRollupHour.objects.create(hour=hour, name="b", queue="q", succeeded=7)  # pruned minutes

    assert main(["rebuild-rollups"]) == 0
    # Of every task: 7 minutes, 6 quarter hours, 3 hours.
    out = capsys.readouterr().out
    assert "rebuilt 3 hours: 7 quarter-hour rows, 5 hour rows, 16 rows of every task" in out
    # The hour of the oldest minute is left as it was: retention may have cut its minutes.
    assert list(TaskRollupHour.objects.filter(hour=hour).values_list("succeeded", flat=True)) == [7]
    oldest.delete()
    TaskRollup.objects.filter(minute__lt=hour + dt.timedelta(hours=1)).delete()
    TaskRollupQuarter.objects.filter(quarter__lt=hour + dt.timedelta(hours=1)).delete()
    rollups.assert_coarse_rows_add_up()
    # From a given hour on only; again gives the same rows.
    before = rollups.rows(TaskRollupHour)
    assert main(["rebuild-rollups", "--since", "2026-11-24T12:00"]) == 0
    assert "rebuilt 1 hours" in capsys.readouterr().out
    assert rollups.rows(TaskRollupHour) == before


@pytest.mark.django_db(transaction=True)
def test_the_rollups_of_every_task_are_filled_each_from_its_periods_rows():
    """Each table of every task from the per-task table of its period: an hour whose minutes were
    pruned keeps its count in the hour table of every task."""
    from taskdeck.models import ALL_TASKS

    before, after = [("taskdeck", "0012_recorder_backlog")], [("taskdeck", "0013_rollups_of_every_task")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        hour = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
        for model_name, field, period in (
            ("TaskRollup", "minute", 60),
            ("TaskRollupQuarter", "quarter", 900),
        ):
            model = apps.get_model("taskdeck", model_name)
            for i, minutes in enumerate((60, 61, 75, 75, 119, 150)):
                stamp = hour + dt.timedelta(minutes=minutes)
                model.objects.get_or_create(
                    **{field: stamp - dt.timedelta(seconds=stamp.timestamp() % period)},
                    name=f"n{i}",
                    queue="q" if i % 2 else "",
                    defaults={"succeeded": i + 1, "failed": i % 2, "runtime_hist": {"10": 1, str(20 + i): i}},
                )
        hours = apps.get_model("taskdeck", "TaskRollupHour")
        hours.objects.create(
            hour=hour, name="n9", queue="q", succeeded=7, wait_hist={"3": 7}
        )  # minutes pruned
        hours.objects.create(hour=hour + dt.timedelta(hours=1), name="n0", queue="", succeeded=4)
        hours.objects.create(hour=hour + dt.timedelta(hours=1), name="n1", queue="q", succeeded=5)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        for model, every in ALL_TASKS.items():
            expected: dict = {}
            for row in apps.get_model("taskdeck", model.__name__).objects.all():
                acc = expected.setdefault(getattr(row, model.period_field), [0, 0, {}, {}])
                acc[0] += row.succeeded
                acc[1] += row.failed
                for i, hist in ((2, row.runtime_hist), (3, row.wait_hist)):
                    for key, value in hist.items():
                        acc[i][key] = acc[i].get(key, 0) + value
            filled = {
                getattr(row, every.period_field): [row.succeeded, row.failed, row.runtime_hist, row.wait_hist]
                for row in apps.get_model("taskdeck", every.__name__).objects.all()
            }
            assert {row.name for row in apps.get_model("taskdeck", every.__name__).objects.all()} == {""}
            assert filled == expected, every.__name__
            assert (
                len(filled)
                == {"TaskRollupAll": 5, "TaskRollupQuarterAll": 4, "TaskRollupHourAll": 2}[every.__name__]
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("taskdeck"))
