"""The pytest plugin that runs Celery's integration suites on the reference configuration.

Loaded with ``-p tests.celery_suite.plugin`` by :mod:`tests.celery_suite.run`
inside the extracted Celery sdist; nothing of Celery's test files is edited.
What it plugs in, through the extension points the suite itself offers:

- ``celery_parameters`` (a fixture of ``celery.contrib.pytest`` that the suite
  leaves to its pytest plugin): the app is made with taskdeck's AMQP class
  (its producer hook) and taskdeck's Django fix-up, as ``create_celery_app``
  makes it;
- ``integration-tests-config.json`` in the sdist's root (the suite's own
  override file, written by the runner): the reference project's Celery
  settings, read from ``core.settings``, less its queues and routes (the
  suite insists on its single ``celery`` queue);
- the ``test_worker_starting`` signal: the consumer steps ``create_celery_app``
  adds (decode errors recorded, task events in batches);
- the result backend named under an alias that starts with ``redis``
  (:data:`SIDE_CHANNEL_ALIAS`): the suite runs a test that needs its Redis
  side channel only when ``result_backend`` starts with ``redis``; the side
  channel is a real Redis server of the run's own, and :func:`pytest_sessionstart`
  fails the run unless the alias resolved to taskdeck's backend class;
- :data:`EXPECTED`: the differences from Celery's Redis backend, each an
  ``xfail(strict=True)`` with its reason (docs/canvas.md has them all);
- :data:`TIME_LIMITS`: a test's own time limit raised, with its reason.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from celery.loaders.app import AppLoader

#: ``TASKDECK_SUITE_BACKEND`` -> result backend class.
BACKENDS = {
    "direct": "taskdeck.results.backend:DatabaseBackend",
    "writebehind": "taskdeck.results.writebehind:WriteBehindBackend",
    "record": "taskdeck.results.record:RecordBackend",
    # The baseline: Celery's own Redis result backend, under the same configuration.
    "celery-redis": "celery.backends.redis:RedisBackend",
}
#: The backend configured by URL (the run's own Redis server), not by alias.
BASELINE = "celery-redis"

#: The name the result backend is configured under (``override_backends``):
#: it starts with ``redis`` so the suite's Redis-gated tests run; it names the
#: class it stands for, and the run checks that class is the one in use.
SIDE_CHANNEL_ALIAS = "redis-side-channel+{backend}"

#: What runs on the combinations other than Redis with the direct backend (node id
#: prefixes): the chord and failure paths of the result backends, and the task
#: states (retries, revocation) — docs/canvas.md says why these.
SUBSET: tuple[str, ...] = tuple(
    f"t/integration/{test}"
    for test in [
        "test_canvas.py::test_chain::test_header_failure_fails_the_chords_after_it",
        "test_canvas.py::test_chain::test_header_failure_fails_the_chords_after_a_group_body",
        "test_canvas.py::test_chain::test_chain_of_nine_chords",
        "test_canvas.py::test_chain::test_chain_error_handler_with_eta",
        "test_canvas.py::test_group::test_parent_ids",
        "test_canvas.py::test_group::test_nested_group",
        "test_canvas.py::test_chord::test_nested_group_chain",
        "test_canvas.py::test_chord::test_generator",
        "test_canvas.py::test_chord::test_add_to_chord",
        "test_canvas.py::test_chord::test_add_chord_to_chord",
        "test_canvas.py::test_chord::test_parallel_chords",
        "test_canvas.py::test_chord::test_chord_in_chords_with_chains",
        "test_canvas.py::test_chord::test_error_propagates_from_chord",
        "test_canvas.py::test_chord::test_chord_error_propagation_with_different_body_types",
        "test_canvas.py::test_chord::test_single_task_header",
        "test_tasks.py::test_tasks::test_task_accepted",
        "test_tasks.py::test_tasks::test_retry",
        "test_tasks.py::test_tasks::test_revoked",
        "test_tasks.py::test_tasks::test_revoked_by_headers_complex_canvas",
        "test_tasks.py::test_tasks::test_task_retried_once",
    ]
)

#: Known differences from Celery's Redis result backend, by test node id under
#: t/integration/ (a parametrized id, or a whole test): (reason, strict). A strict one xfails
#: strictly: a fix that makes it pass fails the run until it is taken off this
#: list. A timing one (strict=False) runs and is reported as xfailed or
#: xpassed. docs/canvas.md has each one with the evidence.
EXPECTED: dict[str, tuple[str, bool]] = {
    "test_canvas.py::test_chord::test_chord_on_error": (
        "reads Celery's Redis backend's own chord keys (get_key_for_group, the .j sorted set)",
        True,
    ),
    "test_tasks.py::test_task_redis_result_backend::test_asyncresult_forget_cancels_subscription": (
        "counts the Redis result backend's pub/sub subscriptions; a database backend has none",
        True,
    ),
    "test_tasks.py::test_task_redis_result_backend::test_asyncresult_get_cancels_subscription": (
        "counts the Redis result backend's pub/sub subscriptions; a database backend has none",
        True,
    ),
    "test_tasks.py::test_tasks::test_revoke_keeps_state_of_task_started_elsewhere[STARTED]": (
        "a STARTED stored by hand is held TASKDECK['RESULTS']['STARTED_DELAY'] (50 ms) like a task's: "
        "the revoke arrives first",
        True,
    ),
    # The reference configuration, not the result backend: these fail the same way on
    # Celery's own Redis result backend (the redis-celery-redis baseline).
    "test_tasks.py::test_trace_log_arguments::test_task_success": (
        "reads the worker's INFO records from caplog; none arrive under the reference configuration, "
        "with Celery's Redis backend too",
        True,
    ),
    "test_tasks.py::test_trace_log_arguments::test_task_failed": (
        "reads the worker's INFO records from caplog; none arrive under the reference configuration, "
        "with Celery's Redis backend too",
        True,
    ),
    # Timing: the test, not the backend.
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0": (
        "the test resets its flag after sending the task: a worker that receives it first fails it",
        False,
    ),
    "test_canvas.py::test_chord::test_chain_to_a_chord_with_large_header": (
        "a 1,000-task generator header: each completion rewrites the counter's list of completions; "
        "within the test's 60 s on a quiet machine, not always at load",
        False,
    ),
}

#: Time limits raised, by test node id: (seconds, reason). The test's own limit
#: (``pytest.mark.timeout``) covers its setup and teardown too; a hang still
#: fails, at the raised limit. docs/canvas.md has the figures.
TIME_LIMITS: dict[str, tuple[int, str]] = {
    "test_tasks.py::test_tasks::test_revoked_by_headers_complex_canvas": (
        60,
        "20 s for eleven canvases twice and, in teardown, the sleeping tasks they queued on one worker "
        "process; Celery's own Redis backend took 20.1 s here",
    ),
}


def backend_name() -> str:
    name = os.environ.get("TASKDECK_SUITE_BACKEND", "direct")
    if name not in BACKENDS:
        raise pytest.UsageError(f"TASKDECK_SUITE_BACKEND={name!r}: expected one of {sorted(BACKENDS)}")
    return name


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django

    django.setup()
    from django.conf import settings

    from taskdeck import conf

    # The suite's single queue is taskdeck's default queue here (system check E004).
    settings.TASKDECK["DEFAULT_QUEUE"] = "celery"
    url = os.environ.get("TASKDECK_SUITE_RESULTS_REDIS_URL")
    if url:  # write-behind's Redis: the run's own server, whatever the broker
        settings.TASKDECK.setdefault("RESULTS", {})["REDIS_URL"] = url
    conf.get.cache_clear()


def pytest_sessionstart(session: pytest.Session) -> None:
    from celery.app.backends import by_name

    if backend_name() == BASELINE:
        return
    cls = by_name(alias(), loader=Loader(app=None))
    expected = BACKENDS[backend_name()].replace(":", ".")
    if f"{cls.__module__}.{cls.__qualname__}" != expected:
        raise pytest.UsageError(f"result backend alias resolved to {cls!r}, not {expected}")


class Loader(AppLoader):
    """Celery's default loader, knowing the result backend's alias."""

    @property
    def override_backends(self) -> dict[str, str]:  # type: ignore[override]
        return {alias(): BACKENDS[backend_name()]}


def alias(backend: str | None = None) -> str:
    return SIDE_CHANNEL_ALIAS.format(backend=backend or backend_name())


@pytest.fixture(scope="session")
def celery_parameters() -> dict[str, Any]:
    from taskdeck.results import FIXUP

    return {"amqp": "taskdeck.app:AMQP", "fixups": [FIXUP], "loader": "tests.celery_suite.plugin:Loader"}


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    return False


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {}


def _add_steps(sender: Any, **kwargs: Any) -> None:
    from taskdeck.app import add_worker_steps

    add_worker_steps(sender)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from celery.contrib.testing.worker import test_worker_starting

    test_worker_starting.connect(_add_steps, weak=False)
    subset = os.environ.get("TASKDECK_SUITE_SELECTION", "full") == "subset"
    keep, left_out = [], []
    for item in items:
        test = item.nodeid.removeprefix("t/integration/")
        if subset and not item.nodeid.startswith(SUBSET):
            left_out.append(item)
        else:
            keep.append(item)
    config.hook.pytest_deselected(items=left_out)  # counted in pytest's summary line
    items[:] = keep
    for item in items:
        test = item.nodeid.removeprefix("t/integration/")
        expected = EXPECTED.get(test) or EXPECTED.get(test.split("[")[0])
        if expected:
            reason, strict = expected
            item.add_marker(pytest.mark.xfail(strict=strict, reason=f"taskdeck: {reason}"))
        if test in TIME_LIMITS:  # before the test's own marker: the closest one counts
            item.add_marker(pytest.mark.timeout(TIME_LIMITS[test][0]), append=False)
