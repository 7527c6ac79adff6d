"""Pages of the task list cost about what a page costs, whatever PostgreSQL expects of a filter.

The run table is filled as bench/dashboard.py fills it (a week of twelve
task names, one of them 2% of the runs; a worker retired, and a task renamed
and its queue dropped, after two days), analysed, and vacuumed as autovacuum
leaves it, or not yet (recent runs, updated as they run, are not all visible
in the visibility map: PostgreSQL then expects no index-only scan), and each query of a
request is run again under ``EXPLAIN (ANALYZE, BUFFERS)``: the table and
index pages it touched are what it costs, and a plan that reads every run
of a name to sort them touches a page for nearly every run.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench import dashboard_data
from taskdeck import conf
from taskdeck.models import AccessScope, TaskRun

# VACUUM, as autovacuum has done to a week of runs, runs outside a transaction.
pytestmark = pytest.mark.django_db(transaction=True)
RUNS = 100_000


def pages_touched(sql: str) -> int:
    """Table and index pages the query touched (in PostgreSQL's buffers, or read into them)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0][0]["Plan"]
    return int(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))


def worst_query(client: Client, path: str) -> tuple[int, str]:
    """The query of ``GET path`` on the run table that touched the most pages: (pages, SQL)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return max(
        (pages_touched(q["sql"]), q["sql"])
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and TaskRun._meta.db_table in q["sql"]
    )


def fill_week(vacuum: bool) -> dict[str, int]:
    assert connection.vendor == "postgresql", "these plans are PostgreSQL's: set DATABASE_URL to one"
    filled = dashboard_data.fill(RUNS, samples=False)
    analyse(vacuum)
    return filled


def analyse(vacuum: bool) -> None:
    """``ANALYZE`` the run table, after a ``VACUUM`` (as autovacuum leaves it) when ``vacuum``."""
    with connection.cursor() as cursor:
        cursor.execute(f"{'VACUUM ' if vacuum else ''}ANALYZE {TaskRun._meta.db_table}")


@pytest.fixture
def week_of_runs() -> dict[str, int]:
    return fill_week(vacuum=True)


def test_a_limited_scopes_search_by_part_of_a_name_costs_what_the_names_own_pages_cost(
    week_of_runs, django_user_model
):
    """A search by part of a name under a scope limited to ``maintenance.*`` pages each of
    its names as a user who sees everything filters by that name: the scope's filter beside
    ``name = X`` made PostgreSQL expect a few rows, read every run of the name and sort them."""
    group = Group.objects.create(name="maintenance team")
    group.permissions.add(Permission.objects.get(codename="view_dashboard"))
    AccessScope.objects.create(group=group, tasks="maintenance.*")
    user = django_user_model.objects.create_user("maintainer", password="x", is_staff=True)
    user.groups.add(group)
    scoped = Client()
    scoped.force_login(user)
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("admin", "", "x"))
    names = TaskRun.objects.filter(name__startswith="maintenance.").values_list("name", flat=True)
    common = max(set(names), key=lambda name: names.filter(name=name).count())
    assert names.filter(name=common).count() > 20 * conf.dashboard()["PAGE_SIZE"]

    own, _ = worst_query(admin, f"/taskdeck/tasks/?name={common}")
    searched, sql = worst_query(scoped, "/taskdeck/tasks/?q=tasks.")
    assert searched <= 2 * own + 50, f"{searched} pages (a name's own page: {own}): {sql[:600]}"


((RENAMED_TASK, (OLD_NAME, OLD_QUEUE)),) = dashboard_data.RENAMED.items()
#: (column, a value whose runs all ended five days ago, a value with runs to the last minute).
RETIRED_VALUES = [
    ("worker", dashboard_data.RETIRED[1], "notifications@web-2"),
    ("name", OLD_NAME, RENAMED_TASK),
    ("queue", OLD_QUEUE, "notifications"),
]


def test_the_page_of_a_value_retired_days_ago_costs_what_an_active_values_costs(admin_client):
    """A worker retired, a task renamed or a queue dropped after the week's first two days
    (still in the filters) is paged from its column's index: PostgreSQL expected its runs
    spread over the table and walked every newer run by id to find its first page. Both
    before autovacuum has been (recent pages not all-visible) and after."""
    fill_week(vacuum=False)
    for vacuumed in (False, True):
        if vacuumed:
            analyse(vacuum=True)
        costs = {}
        for column, retired, active in RETIRED_VALUES:
            assert TaskRun.objects.filter(**{column: retired}).count() > 20 * conf.dashboard()["PAGE_SIZE"]
            assert not TaskRun.objects.filter(**{column: retired}, first_seen_at__gte=recent()).exists()
            for path in ("/taskdeck/tasks/?{}={}", "/taskdeck/api/tasks?{}={}"):
                own, _ = worst_query(admin_client, path.format(column, active))
                retired_page, sql = worst_query(admin_client, path.format(column, retired))
                costs[path.format(column, retired)] = (retired_page, own, sql[:300])
        too_dear = {path: cost for path, cost in costs.items() if cost[0] > 2 * cost[1] + 50}
        assert not too_dear, f"vacuumed {vacuumed}: pages (a retired value's, an active one's): {too_dear}"


def recent() -> dt.datetime:
    return timezone.now() - dt.timedelta(days=4)
