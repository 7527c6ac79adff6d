"""The result backends on SQLite: a worker and a client process sharing one database file.

The client runs tests/results/checks.py, the same checks the PostgreSQL
tests run in the test process.
"""

from __future__ import annotations

import pytest

from taskdeck.results import BACKEND, WRITE_BEHIND
from tests.results.conftest import TASKS, run_checks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("backend", ["direct", "write-behind"])
def test_get_canvas_retries_and_started_on_sqlite(start_worker, services_env, sqlite_url, backend):
    env = {
        "DATABASE_URL": sqlite_url,
        "CELERY_BACKEND": WRITE_BEHIND if backend == "write-behind" else BACKEND,
    }
    worker = start_worker(["default"], args=TASKS, env=env)
    run_checks({**services_env, **env}, worker.hostname)
