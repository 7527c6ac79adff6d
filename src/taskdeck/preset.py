"""The Celery settings taskdeck needs, applied by ``create_celery_app`` under the project's own.

A project adopting taskdeck sets none of these by hand: each ``CELERY_*``
name below that its settings module leaves out takes taskdeck's value; each
one it sets keeps the project's value (the system checks in
:mod:`taskdeck.settings_checks` then say which choices blind monitoring).
docs/adopting.md lists them with the reason for each; docs/configuration.md
says why each differs from Celery's default.

How: Celery reads its configuration from an object (``config_from_object``)
by listing its attributes. :class:`PresetSettings` is Django's settings with
the preset's names added to that list, read when Celery loads its
configuration (the first time ``app.conf`` is read), never at import.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from taskdeck.results import BACKEND, RECORD

#: One record per task run (docs/results.md): the preset's backend where a Redis holds the records.
RECORD_BACKEND = RECORD
#: Results in the Django database, one upsert per state: the preset's backend where none does.
DIRECT_BACKEND = BACKEND

#: Celery's names (lower case, without the namespace) -> taskdeck's value;
#: values that depend on other settings (the broker, the result backend and
#: task events among them) are filled in by :func:`celery_preset`.
STATIC_PRESET: dict[str, Any] = {
    # Monitoring: the recorder sees every run from publish to finish, with
    # its name, arguments and worker.
    "task_send_sent_event": True,
    "result_extended": True,
    "task_track_started": True,
    # A worker killed mid-task does not lose it; a high task is not stuck
    # behind low ones a process already holds.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    # Redis: redelivery after an hour unacknowledged (must exceed the longest
    # task); a worker drains its queues in the order it lists them (lanes).
    "broker_transport_options": {"visibility_timeout": 3600, "queue_order_strategy": "priority"},
    "broker_connection_retry_on_startup": True,
    # A publish that meets a broker restarting is retried for ~15 s.
    "task_publish_retry_policy": {
        "max_retries": 10,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 2,
    },
    # JSON only: a pickled message could run code on the workers.
    "accept_content": ["application/json"],
    "task_serializer": "json",
    "result_serializer": "json",
}


def default_result_backend(broker_url: str, results_redis_url: str | None = None) -> str:
    """The record backend when its records have a Redis, else the direct backend.

    The records go to ``TASKDECK["RESULTS"]["REDIS_URL"]``, else to the
    broker's Redis (a Sentinel URL is not one the backend can use): on a
    RabbitMQ broker without that setting, results go to the database directly.
    """
    from taskdeck import brokers

    if results_redis_url or brokers.is_plain_redis(broker_url or ""):
        return RECORD_BACKEND
    return DIRECT_BACKEND


def sends_task_events(result_backend: str) -> bool:
    """Whether workers send task events by default: not with the record backend (its records carry them)."""
    return result_backend != RECORD_BACKEND


def celery_preset(namespace: str = "CELERY") -> dict[str, Any]:
    """Every preset value (Celery's lower-case names), computed from the current settings."""
    from taskdeck import conf
    from taskdeck.lanes import declare_queues

    options = conf.get()
    data_dir = options["DATA_DIR"]
    preset = dict(STATIC_PRESET)
    # The embedded default: the Redis `taskdeck up` starts on a socket in DATA_DIR.
    preset["broker_url"] = f"redis+socket://{data_dir / 'redis.sock'}"
    broker_url = getattr(settings, f"{namespace}_BROKER_URL", None) or preset["broker_url"]
    preset["result_backend"] = default_result_backend(broker_url, options["RESULTS"]["REDIS_URL"])
    # Heartbeats go out either way; task events only where no record carries the run.
    backend = getattr(settings, f"{namespace}_RESULT_BACKEND", None) or preset["result_backend"]
    preset["worker_send_task_events"] = sends_task_events(str(backend))
    default = options["DEFAULT_QUEUE"]
    preset["task_default_queue"] = default
    lanes = options["LANES"] if isinstance(options["LANES"], dict) else {}
    preset["task_queues"] = declare_queues(broker_url, [default, *dict.fromkeys(lanes.values())])
    preset["timezone"] = settings.TIME_ZONE
    if "django_celery_beat" in settings.INSTALLED_APPS and find_spec("django_celery_beat"):
        preset["beat_scheduler"] = "django_celery_beat.schedulers:DatabaseScheduler"
    else:
        # Celery's file scheduler; its file in DATA_DIR, not the working folder (made if missing).
        preset["beat_scheduler"] = "taskdeck.beat:FileScheduler"
        preset["beat_schedule_filename"] = str(data_dir / "celerybeat-schedule")
    return preset


class PresetSettings:
    """Django's settings, plus ``<namespace>_<NAME>`` for each preset name the project leaves unset.

    Celery looks up several names Django's settings do not have at every
    send (``task_always_eager``, ``task_repr_maxlevels``, the pool timeout,
    each under up to four spellings: 16 a task), and each miss raised in
    Django's ``LazySettings`` (about 10 µs a lookup). The names found
    missing are remembered until a setting changes (``override_settings``
    and pytest-django's ``settings`` say so with ``setting_changed``).
    """

    def __init__(self, namespace: str = "CELERY") -> None:
        self.namespace = namespace
        self._preset: dict[str, Any] | None = None
        self._absent: set[str] = set()
        setting_changed.connect(self._setting_changed)

    def _setting_changed(self, **kwargs: Any) -> None:
        self._absent.clear()

    def preset(self) -> dict[str, Any]:
        if self._preset is None:
            self._preset = {
                f"{self.namespace}_{name.upper()}": value
                for name, value in celery_preset(self.namespace).items()
            }
        return self._preset

    def __dir__(self) -> list[str]:
        return sorted(set(dir(settings)) | set(self.preset()))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._absent:
            try:
                return getattr(settings, name)
            except AttributeError:
                self._absent.add(name)
        preset = self.preset()
        if name in preset:
            return preset[name]
        raise AttributeError(name)
