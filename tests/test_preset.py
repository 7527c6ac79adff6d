"""The preset's result backend and task events follow where a Redis can hold the records."""

from __future__ import annotations

import pytest
from django.test import override_settings

from taskdeck import conf
from taskdeck.preset import DIRECT_BACKEND, RECORD_BACKEND, PresetSettings, default_result_backend


@pytest.mark.parametrize(
    ("broker", "redis_url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", None, RECORD_BACKEND),
        ("rediss://cache.example:6380/0", None, RECORD_BACKEND),
        ("redis+socket:///run/redis.sock", None, RECORD_BACKEND),
        # A Sentinel URL is not one the record backend's client can use.
        ("sentinel://10.0.0.1:26379", None, DIRECT_BACKEND),
        ("amqp://guest@127.0.0.1//", None, DIRECT_BACKEND),
        ("pyamqp://guest@127.0.0.1//", None, DIRECT_BACKEND),
        ("amqp://guest@127.0.0.1//", "redis://127.0.0.1:6379/3", RECORD_BACKEND),
        ("sqs://", None, DIRECT_BACKEND),
        ("", None, DIRECT_BACKEND),
    ],
)
def test_default_result_backend(broker: str, redis_url: str | None, expected: str) -> None:
    assert default_result_backend(broker, redis_url) == expected


def preset_of(**settings: object) -> PresetSettings:
    unset = {"CELERY_RESULT_BACKEND": None, "CELERY_WORKER_SEND_TASK_EVENTS": None}
    with override_settings(**{**unset, **settings}):
        conf.get.cache_clear()
        preset = PresetSettings()
        preset.preset()
    conf.get.cache_clear()
    return preset


def test_on_redis_the_preset_ships_records_and_no_task_events() -> None:
    preset = preset_of(CELERY_BROKER_URL="redis://127.0.0.1:6379/0").preset()
    assert preset["CELERY_RESULT_BACKEND"] == RECORD_BACKEND
    assert preset["CELERY_WORKER_SEND_TASK_EVENTS"] is False
    assert preset["CELERY_TASK_SEND_SENT_EVENT"] is True


def test_on_rabbitmq_the_preset_writes_rows_directly_and_sends_task_events() -> None:
    preset = preset_of(CELERY_BROKER_URL="amqp://guest@127.0.0.1//").preset()
    assert preset["CELERY_RESULT_BACKEND"] == DIRECT_BACKEND
    assert preset["CELERY_WORKER_SEND_TASK_EVENTS"] is True


def test_on_rabbitmq_with_a_results_redis_the_preset_ships_records() -> None:
    preset = preset_of(
        CELERY_BROKER_URL="amqp://guest@127.0.0.1//",
        TASKDECK={"RESULTS": {"REDIS_URL": "redis://127.0.0.1:6379/3"}},
    ).preset()
    assert preset["CELERY_RESULT_BACKEND"] == RECORD_BACKEND
    assert preset["CELERY_WORKER_SEND_TASK_EVENTS"] is False


def test_a_project_s_own_backend_keeps_the_task_events_it_needs() -> None:
    """A project that picks the direct backend on Redis still gets task events: nothing else carries runs."""
    preset = preset_of(CELERY_BROKER_URL="redis://127.0.0.1:6379/0", CELERY_RESULT_BACKEND=DIRECT_BACKEND)
    assert preset.preset()["CELERY_WORKER_SEND_TASK_EVENTS"] is True


def test_a_name_django_lacks_is_asked_of_it_once_until_a_setting_changes(monkeypatch) -> None:
    """Celery asks for the same absent names at every send: Django's settings are asked once
    (each miss raised there), and again after a setting changes, which then reads as set."""
    from django.conf import LazySettings

    asked: list[str] = []
    real = LazySettings.__getattr__

    def counting(self: LazySettings, name: str) -> object:
        asked.append(name)
        return real(self, name)

    monkeypatch.setattr(LazySettings, "__getattr__", counting)
    preset = PresetSettings()
    absent, preset_name = "CELERY_TASK_REPR_MAXLEVELS", "CELERY_TASK_SEND_SENT_EVENT"
    for _ in range(10):
        with pytest.raises(AttributeError):
            getattr(preset, absent)
    assert asked.count(absent) == 1
    with override_settings(CELERY_TASK_REPR_MAXLEVELS=7, CELERY_TASK_SEND_SENT_EVENT=False):
        assert (getattr(preset, absent), getattr(preset, preset_name)) == (7, False)
    with pytest.raises(AttributeError):
        getattr(preset, absent)
    assert getattr(preset, preset_name) is True  # the preset's value once the project's is gone
