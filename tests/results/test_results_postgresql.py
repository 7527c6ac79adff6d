"""The direct result backend with real workers on Redis and the PostgreSQL test database.

What users rely on (tests/results/checks.py, run here in the test process),
and what makes it fast: each worker process keeps one database session for
its tasks and their results, across tasks, forks and a server-side kill.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from django.db import connection

from taskdeck.results import BACKEND
from tests.results import checks
from tests.results.conftest import TASKS
from tests.results.tasks import add, whoami
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
#: The direct backend by name: on Redis the shipped default is the record one (test_results_record.py).
DIRECT = {"CELERY_BACKEND": BACKEND}


def test_get_failure_retries_and_extended_fields(start_worker):
    worker = start_worker(["default"], args=TASKS, env=DIRECT)
    checks.get_success_and_failure(worker.hostname)
    checks.unknown_task_is_named(worker.hostname)
    checks.extended_fields(worker.hostname)
    checks.retries(worker.hostname)


def test_started_is_visible_while_the_task_runs(start_worker):
    worker = start_worker(["default"], args=TASKS, env=DIRECT)
    checks.started_while_running(worker.hostname)


def test_group_join_and_chord_callback_once(start_worker):
    worker = start_worker(["default"], args=TASKS, env=DIRECT)
    checks.group_join(worker.hostname)
    checks.chord_once(worker.hostname)


def sessions(count: int) -> dict[int, set[int]]:
    """Run ``whoami`` ``count`` times: worker process id -> database session ids seen."""
    seen: dict[int, set[int]] = defaultdict(set)
    for result in [whoami.delay() for _ in range(count)]:
        answer = result.get(timeout=checks.TIMEOUT)
        seen[answer["pid"]].add(answer["backend"])
    return seen


def other_sessions() -> set[int]:
    """Sessions on the test database other than the test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_each_worker_process_keeps_one_session(start_worker):
    # Sessions of earlier tests' processes still ending (a loaded run had one) are not this worker's.
    before = other_sessions()
    start_worker(["default"], concurrency=2, args=TASKS, env=DIRECT)
    seen = sessions(30)
    assert all(len(backends) == 1 for backends in seen.values()), seen
    backends = set().union(*seen.values())
    assert len(backends) == len(seen)  # no two processes share one
    # Still open after the tasks (Celery's own fix-up closes them after each
    # one). Besides them: at most one per process for held STARTED states
    # (taskdeck.results.started), opened if a task ran longer than the delay.
    sessions_now = other_sessions() - before
    assert backends <= sessions_now and len(sessions_now) <= 2 * len(seen), (backends, sessions_now)


def test_sessions_survive_forks_next_to_the_main_process_session(start_worker):
    worker = start_worker(["default"], concurrency=2, args=[*TASKS, "--max-tasks-per-child", "3"], env=DIRECT)

    # The main process stores an unknown task's FAILURE and names it: it now
    # holds a session, which every child forked from now on inherits and must
    # leave alone.
    checks.unknown_task_is_named(worker.hostname)
    seen = sessions(15)  # five generations of children at least
    assert len(seen) >= 4, seen
    assert all(len(backends) == 1 for backends in seen.values()), seen
    assert len(set().union(*seen.values())) == len(seen)
    checks.unknown_task_is_named(worker.hostname)  # the main process's session still works
    log = worker.output()
    assert "OperationalError" not in log and "InterfaceError" not in log


def test_a_session_killed_by_the_server_is_replaced(start_worker):
    start_worker(["default"], concurrency=1, args=TASKS, env=DIRECT)
    first = whoami.delay().get(timeout=checks.TIMEOUT)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first["backend"]])
    wait_for(lambda: first["backend"] not in other_sessions(), 30, "the session to end")
    second = whoami.delay().get(timeout=checks.TIMEOUT)
    assert second["pid"] == first["pid"] and second["backend"] != first["backend"]
    assert add.delay(1, 1).get(timeout=checks.TIMEOUT) == 2
