"""The migrations match the models; 0003 fills the coarse rollups from the minutes recorded before it."""

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
