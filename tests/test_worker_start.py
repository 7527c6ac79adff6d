"""What a worker of the reference project says when it starts: nothing it should not."""

from __future__ import annotations

from types import SimpleNamespace

from taskdeck.app import _namespaced_settings_are_current


def test_a_worker_starts_without_calling_the_projects_settings_deprecated(start_worker):
    """Under the CELERY namespace, CELERY_TASK_SERIALIZER is the current name, not Celery 3's.

    Celery warned once per such key at every worker start (7 warnings with
    the preset) and told the user to run `celery upgrade settings`.
    """
    worker = start_worker(["default"], concurrency=1)
    log = worker.output()
    assert "ready." in log
    assert "CDeprecationWarning" not in log and "celery upgrade settings" not in log, log


def test_a_real_celery_3_name_is_still_reported():
    conf = SimpleNamespace(
        deprecated_settings={"CELERY_TASK_SERIALIZER", "CELERY_ALWAYS_EAGER", "BROKER_URL"}
    )
    _namespaced_settings_are_current("CELERY_", sender=None, source=conf)
    assert conf.deprecated_settings == {"CELERY_ALWAYS_EAGER", "BROKER_URL"}
