"""taskdeck's settings: one ``TASKDECK`` dict merged over documented defaults.

Read at call time through :func:`get`, cached, and the cache is cleared on
Django's ``setting_changed`` so ``override_settings`` works in tests.

Keys
----
``DATA_DIR``
    Folder for the embedded default's files (Redis socket and append-only
    file, SQLite database, logs). Default: the environment's
    ``TASKDECK_DATA_DIR``, else ``<BASE_DIR>/.taskdeck``.
``DEFAULT_QUEUE``
    Name of the queue tasks go to when no route matches. Must equal
    ``CELERY_TASK_DEFAULT_QUEUE``; the system check ``taskdeck.E004`` says so
    when they differ. Default: ``"default"``.
``LANES``
    Ordered mapping of lane name to queue name, highest priority first.
    Default: ``{"high": "high_priority", "medium": "medium_priority",
    "low": "low_priority"}`` (the notes' three queues).
``WORKERS``
    Worker groups that ``taskdeck up`` starts, one ``celery worker`` each:
    ``{"name": {"queues": [...], "concurrency": 2, "pool": "prefork",
    "prefetch_multiplier": 1}}``. The system check reports routes to queues
    that no group consumes. Default: ``{}``.
``BEAT``
    Whether ``taskdeck up`` starts ``celery beat``. Default: ``True``.
``WEB_ADDRESS``
    ``host:port`` of the web server ``taskdeck up`` starts.
    Default: ``"127.0.0.1:8000"``.
``WEB_WORKERS``
    Processes of the web server ``taskdeck up`` starts (gunicorn, 4 threads
    each). Default: ``2``.
``MONITOR_PROCESS``
    Whether ``taskdeck up`` starts the recorder (``taskdeck monitor``).
    Default: ``True``.
``MAX_MESSAGE_BYTES``
    Largest serialized task message (arguments, keyword arguments and canvas,
    in bytes, before the broker's own envelope) that ``apply_async`` sends
    (apps made by ``create_celery_app``). A larger one raises
    :class:`~taskdeck.errors.MessageTooLargeError` naming the task and its
    largest argument, and nothing is sent. ``None`` turns the check off.
    Default: ``1048576`` (1 MiB).
``WORKER_MAX_MESSAGE_BYTES``
    Largest task message body (bytes, as received) a worker accepts (apps made
    by ``create_celery_app``). A larger one is not run: it is acknowledged,
    recorded as ``REJECTED`` and dead-lettered (:mod:`taskdeck.guard`).
    ``None`` turns the check off. Default: ``10485760`` (10 MiB, ten times
    ``MAX_MESSAGE_BYTES``, so a producer with a raised limit still gets through).
``DEAD_LETTER_BODY_BYTES``
    Bytes of a dead letter's body (and of its headers as JSON) kept in the
    dead-letter store (:mod:`taskdeck.deadletter`); a longer one is cut and
    marked truncated, and cannot be requeued. Default: ``1048576`` (1 MiB).
``DEMO``
    Dotted path to a function returning the :class:`taskdeck.demo.Job` list
    that ``taskdeck demo`` sends. Default: ``None`` (no demo).
``WORKER_DB_CONNECTIONS``
    How a worker treats its database connections between tasks (apps made by
    ``create_celery_app``). ``"reuse"``: as Django treats them between
    requests — kept until unusable, older than ``CONN_MAX_AGE``, or hung up
    on by the server; with ``OPTIONS["pool"]`` handed back to the process's
    pool. ``"close"``: Celery's own behaviour, closed before and after every
    task (``CELERY_DB_REUSE_MAX`` applies). See docs/results.md.
    Default: ``"reuse"``.
``RESULTS``
    taskdeck's result backends (:mod:`taskdeck.results`); a dict merged over
    :data:`RESULTS_DEFAULTS`, whose comments document each key.
``MONITOR``
    The recorder, sampler, API, ``/metrics`` and alerts; a dict merged over
    :data:`MONITOR_DEFAULTS`, whose comments document each key.
``DASHBOARD``
    The web dashboard (``taskdeck.dashboard``); a dict merged over
    :data:`DASHBOARD_DEFAULTS`, whose comments document each key.
``PAYLOADS``
    Arguments captured at publish (:mod:`taskdeck.payloads`); a dict merged
    over :data:`PAYLOADS_DEFAULTS`, whose comments document each key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "DATA_DIR": None,
    "DEFAULT_QUEUE": "default",
    "LANES": {"high": "high_priority", "medium": "medium_priority", "low": "low_priority"},
    "WORKERS": {},
    "BEAT": True,
    "WEB_ADDRESS": "127.0.0.1:8000",
    "WEB_WORKERS": 2,
    "MONITOR_PROCESS": True,
    "DEMO": None,
    "MAX_MESSAGE_BYTES": 1024 * 1024,
    "WORKER_MAX_MESSAGE_BYTES": 10 * 1024 * 1024,
    "DEAD_LETTER_BODY_BYTES": 1024 * 1024,
    "WORKER_DB_CONNECTIONS": "reuse",
    "RESULTS": {},
    "MONITOR": {},
    "DASHBOARD": {},
    "PAYLOADS": {},
}

RESULTS_DEFAULTS: dict[str, Any] = {
    # With CELERY_TASK_TRACK_STARTED, STARTED is stored only for a task still
    # running this many seconds after it started (the final state's row always
    # has date_started); 0 stores every STARTED at once, as Celery does.
    "STARTED_DELAY": 0.05,
    # Write-behind backend only (taskdeck.results.writebehind):
    # where results wait for the database; None means the broker's Redis.
    "REDIS_URL": None,
    "KEY_PREFIX": "taskdeck:results:",
    # Seconds a result stays readable in Redis; reads fall back to the database.
    "TTL": 3600,
    # The flusher writes at most BATCH_SIZE rows per statement, and waits
    # FLUSH_INTERVAL seconds when nothing is pending.
    "BATCH_SIZE": 500,
    "FLUSH_INTERVAL": 0.1,
    # One flusher writes at a time (rows stay in order); its lock expires after
    # LOCK_TIMEOUT seconds if it dies, and another worker's flusher takes over.
    "LOCK_TIMEOUT": 10,
}

MONITOR_DEFAULTS: dict[str, Any] = {
    # Workers (apps made by create_celery_app): seconds a worker holds its
    # buffered task events before one publish sends them all (taskdeck.events).
    # 0 is Celery's behaviour: one publish per event.
    "EVENT_FLUSH_INTERVAL": 0.1,
    # Recorder: events are applied in batches of at most BATCH_SIZE, at least
    # every FLUSH_INTERVAL seconds; at most BUFFER events wait in memory (the
    # capture thread blocks when it is full, so memory stays bounded).
    "BATCH_SIZE": 1000,
    "FLUSH_INTERVAL": 0.5,
    # Recorder, records (taskdeck.results.record): a read that finds fewer than
    # BATCH_SIZE records waits until the oldest is RECORD_LINGER seconds old
    # and takes what came meanwhile: a batch costs nearly as much to write
    # small as full, so fewer, fuller batches (adds at most this to the lag;
    # docs/monitoring.md has the figures).
    "RECORD_LINGER": 0.5,
    # Recorder, events (no records): the same for a batch of events, timed from
    # the arrival of its first: a batch not yet full takes what arrives until that
    # event has waited EVENT_LINGER seconds (0: what is waiting when it arrives).
    "EVENT_LINGER": 0.5,
    # Recorder, records: a record read by a recorder that then stopped for good
    # (killed, its host gone) is taken over by another recorder once it has been
    # pending RECORD_CLAIM_AFTER seconds; recorders look every half of it. A
    # recorder restarted under its own --name reads its own at once.
    "RECORD_CLAIM_AFTER": 60,
    "BUFFER": 20000,
    # RabbitMQ: each recorder (by --name) consumes a durable event queue of its
    # own that outlives a restart, so events sent while it is down wait for it:
    # each for EVENT_QUEUE_TTL seconds, at most EVENT_QUEUE_MAX_BYTES in all (the
    # oldest dropped first); the queue itself goes EVENT_QUEUE_EXPIRES seconds
    # after its recorder stopped for good. (Redis delivers events by PUBLISH:
    # nothing waits there for a recorder that is down.)
    "EVENT_QUEUE_TTL": 3600,
    "EVENT_QUEUE_EXPIRES": 86400,
    "EVENT_QUEUE_MAX_BYTES": 64 * 1024 * 1024,
    # Characters kept of args/kwargs/result reprs and of tracebacks.
    "REPR_LIMIT": 1024,
    "TRACEBACK_LIMIT": 16384,
    # Retention in seconds; None keeps forever. Pruned in batches of PRUNE_BATCH.
    "RUN_RETENTION": 7 * 86400,
    "ROLLUP_RETENTION": 90 * 86400,
    "SAMPLE_RETENTION": 2 * 86400,
    "INCIDENT_RETENTION": 90 * 86400,
    # A worker offline longer than this, with no run left received or started
    # on it, is forgotten (its row deleted; its runs keep its name). Hosts that
    # come and go (autoscaled, one hostname per container) leave a row each.
    "WORKER_RETENTION": 7 * 86400,
    # Dead letters (taskdeck.deadletter): kept DEAD_LETTER_RETENTION seconds,
    # and the newest ones only, up to DEAD_LETTER_MAX_BYTES in all (bodies plus
    # 1 KiB a row for the rest), so that a flood of junk cannot fill the disk.
    "DEAD_LETTER_RETENTION": 30 * 86400,
    "DEAD_LETTER_MAX_BYTES": 256 * 1024 * 1024,
    "PRUNE_INTERVAL": 300,
    "PRUNE_BATCH": 5000,
    # Runs whose result row (django-celery-results) is newer than the last
    # event written minus RECONCILE_MARGIN seconds, and that the recorder has
    # not seen finish, are filled in at start-up and every RECONCILE_INTERVAL.
    "RECONCILE_INTERVAL": 30,
    "RECONCILE_MARGIN": 300,
    # Queue sampler: every SAMPLE_INTERVAL seconds; QUEUES None means every
    # queue in CELERY_TASK_QUEUES plus the default queue.
    "SAMPLE_INTERVAL": 5,
    "QUEUES": None,
    # RabbitMQ management API for unacknowledged counts per queue, e.g.
    # "http://guest:guest@127.0.0.1:15672"; None: ready counts only.
    "RABBITMQ_MANAGEMENT_URL": None,
    # Worker pool and concurrency come from `inspect stats` this often.
    "INSPECT_INTERVAL": 30,
    # A worker is offline after this many missed heartbeats.
    "HEARTBEAT_MISSES": 3,
    # LOST and STUCK runs (taskdeck.monitor.liveness; docs/monitoring.md), looked
    # for every LIVENESS_INTERVAL seconds: a run received or started on a worker now
    # offline is LOST; a run sent and not received after STUCK_AFTER seconds (None:
    # never by age), or after STUCK_NO_CONSUMER_AFTER seconds when no online worker
    # consumes its queue, is STUCK.
    "LIVENESS_INTERVAL": 5,
    "STUCK_AFTER": 300,
    "STUCK_NO_CONSUMER_AFTER": 30,
    # Recorder health: lag and heartbeat older than this is "stale". Workers with
    # the record backend look this often, and warn in their log while a record
    # has waited longer than this for a recorder (0: they never look).
    "RECORDER_STALE_AFTER": 30,
    # Access: the API needs a staff session or a token; /metrics a token or a
    # client address in METRICS_NETWORKS. TOKENS are accepted besides the
    # ApiToken rows (handy for a Prometheus scrape config from the environment).
    "TOKENS": [],
    "METRICS_NETWORKS": ["127.0.0.1/32", "::1/128"],
    # Reverse proxies whose X-Forwarded-For is believed for /metrics. A request
    # that carries a forwarding header (Forwarded, X-Forwarded-For, X-Real-IP)
    # from any other peer needs the token, even from 127.0.0.1 (docs/deploying.md).
    "METRICS_TRUSTED_PROXIES": [],
    # Charts (taskdeck.monitor.series, GET /api/series): a bucket that ended more
    # than SERIES_SETTLE seconds ago is kept in the Django cache SERIES_CACHE
    # (an alias of CACHES) for SERIES_CACHE_TTL seconds.
    "SERIES_CACHE": "default",
    "SERIES_CACHE_TTL": 3600,
    "SERIES_SETTLE": 120,
    # Distinct task names (and queues) /metrics labels by their own name, the
    # first seen; later ones are summed under "(other)" (taskdeck.metrics).
    "METRICS_MAX_LABEL_VALUES": 500,
    # Prometheus histogram buckets (seconds) of runtime and wait.
    "METRICS_BUCKETS": [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    # Alert rules evaluated by the recorder every ALERT_INTERVAL seconds, e.g.
    # {"name": "payments failing", "kind": "failure_rate", "threshold": 0.2,
    #  "window": 300, "task": "orders.tasks.*", "min_runs": 10}; kinds:
    # failure_rate, queue_depth, oldest_message_age, worker_offline, recorder_lag,
    # lost, stuck (runs LOST or STUCK now, per queue, over the threshold).
    "ALERTS": [],
    "ALERT_INTERVAL": 10,
    # Deliveries besides the "taskdeck.alerts" logger.
    "ALERT_WEBHOOK": None,
    "ALERT_EMAILS": [],
}

DASHBOARD_DEFAULTS: dict[str, Any] = {
    # Seconds between refreshes of the live parts of a page (htmx polling).
    "REFRESH": 5,
    # Rows per page of the task list (keyset pagination, newest first).
    "PAGE_SIZE": 50,
    # "Retry all" of a failure group retries at most this many runs per click.
    "BULK_RETRY_LIMIT": 500,
    # Seconds to wait for workers' replies to remote control (pool grow/shrink,
    # the queues' consumers); the consumers are cached that long in CACHE.
    "CONTROL_TIMEOUT": 1.0,
    "CACHE": "default",
    # Login throttling (taskdeck.dashboard.lockout): after LOGIN_FAILURES failed
    # logins of one username within LOGIN_LOCKOUT seconds, its logins are refused
    # for LOGIN_LOCKOUT seconds; counted in the Django cache LOGIN_CACHE (shared
    # between web processes only if that cache is).
    "LOGIN_FAILURES": 5,
    "LOGIN_LOCKOUT": 900,
    "LOGIN_CACHE": "default",
}

PAYLOADS_DEFAULTS: dict[str, Any] = {
    # Apps made by create_celery_app capture each published task's args and
    # kwargs as JSON into its task-sent event; the recorder stores them on the run
    # and the dashboard's retry sends them again (taskdeck.payloads).
    "ENABLED": True,
    # Largest payload kept whole (bytes of its JSON); a larger one is cut and
    # marked truncated, and cannot be retried.
    "MAX_BYTES": 16384,
    # Regular expressions searched (case-insensitively) in every dict key of the
    # arguments and in the names of positional parameters: a match's value is
    # replaced by "[redacted]" in the payload and in the repr text events carry.
    "REDACT_KEYS": [
        "passw",
        "token",
        "secret",
        "api[-_]?key",
        "authorization",
        "credential",
        "private[-_]?key",
    ],
    # Dotted path to hook(task_name, args, kwargs) -> (args, kwargs) or None,
    # called after the key rules; what it returns replaces the arguments and
    # marks the payload redacted.
    "REDACT_HOOK": None,
    # Task names and queue names (globs, e.g. "billing.*") whose payload is not captured.
    "EXCLUDE_TASKS": [],
    "EXCLUDE_QUEUES": [],
}

WORKER_DEFAULTS: dict[str, Any] = {
    "queues": [],
    "concurrency": 2,
    "pool": "prefork",
    # One message reserved per process: a high-priority task sent later is not
    # stuck behind messages a process already holds (see docs/configuration.md).
    "prefetch_multiplier": 1,
}


@cache
def get() -> dict[str, Any]:
    """The effective TASKDECK settings."""
    # A TASKDECK, WORKERS or worker group that is not a dict leaves the
    # defaults (system checks taskdeck.E021 and E006 name it), so that
    # `manage.py check` and `taskdeck up` can say what is wrong instead of failing.
    user = _dict(getattr(settings, "TASKDECK", {}))
    # A value of the wrong type leaves its default (taskdeck.E026, E003 name it).
    merged = {**DEFAULTS, **_typed(user, DEFAULTS)}
    if not lanes_ok(merged["LANES"]):
        merged["LANES"] = DEFAULTS["LANES"]
    if merged["DATA_DIR"] is None:
        default = Path(getattr(settings, "BASE_DIR", Path.cwd())) / ".taskdeck"
        merged["DATA_DIR"] = os.environ.get("TASKDECK_DATA_DIR") or default
    merged["DATA_DIR"] = Path(merged["DATA_DIR"])
    # A nested value that is not a dict leaves the defaults (system check taskdeck.E021 names it).
    merged["MONITOR"] = {**MONITOR_DEFAULTS, **_typed(_dict(user.get("MONITOR")), MONITOR_DEFAULTS)}
    merged["RESULTS"] = {**RESULTS_DEFAULTS, **_typed(_dict(user.get("RESULTS")), RESULTS_DEFAULTS)}
    merged["DASHBOARD"] = {**DASHBOARD_DEFAULTS, **_typed(_dict(user.get("DASHBOARD")), DASHBOARD_DEFAULTS)}
    merged["PAYLOADS"] = {**PAYLOADS_DEFAULTS, **_typed(_dict(user.get("PAYLOADS")), PAYLOADS_DEFAULTS)}
    merged["WORKERS"] = {
        name: {**WORKER_DEFAULTS, **group}
        for name, group in _dict(merged["WORKERS"]).items()
        if not worker_group_problems(group)
    }
    return merged


def worker_group_problems(group: Any) -> list[tuple[str | None, str]]:
    """What is wrong with a group of ``WORKERS`` as written: ``(key or None, what it must be)``.

    A group with a problem is left out of :func:`get` (no worker is started
    for it, nothing reads a wrong type); system check ``taskdeck.E006`` names it.
    """
    if not isinstance(group, Mapping):
        return [(None, "a dict")]
    merged = {**WORKER_DEFAULTS, **group}
    problems: list[tuple[str | None, str]] = []
    queues = merged["queues"]
    if (
        not isinstance(queues, list | tuple)
        or not queues
        or not all(isinstance(q, str) and q and "," not in q for q in queues)
    ):
        problems.append(("queues", "a non-empty list of queue names"))
    for key, least in (("concurrency", 1), ("prefetch_multiplier", 0)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append((key, f"an integer of at least {least}"))
    from celery.concurrency import ALIASES

    if not isinstance(merged["pool"], str) or merged["pool"] not in ALIASES:
        problems.append(("pool", f"one of Celery's pools ({', '.join(sorted(ALIASES))})"))
    return problems


#: Keys whose value may be None besides their default's type (None: "off" or "keep forever").
NULLABLE = {
    "DATA_DIR", "DEMO", "MAX_MESSAGE_BYTES", "WORKER_MAX_MESSAGE_BYTES", "REDIS_URL", "QUEUES",
    "RUN_RETENTION", "ROLLUP_RETENTION", "SAMPLE_RETENTION", "INCIDENT_RETENTION",
    "WORKER_RETENTION", "DEAD_LETTER_RETENTION", "DEAD_LETTER_MAX_BYTES",
    "RABBITMQ_MANAGEMENT_URL", "ALERT_WEBHOOK", "STUCK_AFTER",
}  # fmt: skip
#: Counts that must be at least 1: 0 reads or writes nothing (``BATCH_SIZE`` 0: no record was ever read).
POSITIVE = {"BATCH_SIZE", "PRUNE_BATCH", "BUFFER", "PAGE_SIZE", "WEB_WORKERS"}
#: The largest duration (seconds: about 31 years) and count or size a setting takes. Beyond them
#: Python's dates, or Redis' and PostgreSQL's integers, overflow (``FLUSH_INTERVAL`` inf stopped the
#: recorder at start; ``RUN_RETENTION`` 10**30 failed every pruning); None keeps forever where allowed.
MAX_SECONDS = 10**9
MAX_COUNT = 10**15
#: Keys whose value is checked by a rule of its own (LANES, WORKERS, the nested dicts, the monitor's access).
OWN_RULES = {
    "LANES", "WORKERS", "MONITOR", "RESULTS", "DASHBOARD",
    "TOKENS", "METRICS_NETWORKS", "METRICS_TRUSTED_PROXIES",
}  # fmt: skip


def expected_type(key: str, default: Any) -> str | None:
    """What a value of ``key`` must be, said for a person; None: anything goes."""
    none = " or None" if key in NULLABLE else ""
    if key in OWN_RULES:
        return None
    if key == "DATA_DIR":
        return f"a path{none}"
    if isinstance(default, bool):
        return f"True or False{none}"
    if isinstance(default, int | float):
        least = 1 if key in POSITIVE else 0
        if _seconds(key, default):
            return f"a number of seconds from {least} to {MAX_SECONDS:,}{none}"
        return f"a whole number from {least} to {MAX_COUNT:,}{none}"
    if _numbers(default):
        return f"a list of numbers from 0 to {MAX_SECONDS:,}{none}"
    for kind, said in ((str, "a text"), (list | tuple, "a list"), (dict, "a dict")):
        if isinstance(default, kind):
            return f"{said}{none}"
    return None


def fits(key: str, value: Any, default: Any) -> bool:
    """Whether ``value`` has the type ``key``'s default says (:func:`expected_type`)."""
    if key in OWN_RULES or (value is None and key in NULLABLE):
        return True
    if key == "DATA_DIR":
        return isinstance(value, str | os.PathLike) and bool(str(value))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if _seconds(key, default):
            return math.isfinite(value) and (1 if key in POSITIVE else 0) <= value <= MAX_SECONDS
        return isinstance(value, int) and (1 if key in POSITIVE else 0) <= value <= MAX_COUNT
    if _numbers(default):
        return isinstance(value, list | tuple) and all(
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and 0 <= v <= MAX_SECONDS
            for v in value
        )
    for kind in (str, list | tuple, dict):
        if isinstance(default, kind):
            return isinstance(value, Mapping if kind is dict else kind)
    return True


def _numbers(default: Any) -> bool:
    """A list of numbers (``METRICS_BUCKETS``)."""
    return (
        isinstance(default, list | tuple)
        and bool(default)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in default)
    )


def _seconds(key: str, default: Any) -> bool:
    """A duration, read as a float (a count, a size or a TTL Redis is given is a whole number)."""
    return isinstance(default, float) or key.endswith(
        ("INTERVAL", "TIMEOUT", "_AFTER", "SETTLE", "REFRESH", "DELAY", "RETENTION")
    )


def _typed(given: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value for key, value in given.items() if key not in defaults or fits(key, value, defaults[key])
    }


def lanes_ok(lanes: Any) -> bool:
    return (
        isinstance(lanes, Mapping)
        and bool(lanes)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in lanes.items())
    )


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def monitor() -> dict[str, Any]:
    """The effective ``TASKDECK["MONITOR"]`` settings."""
    return dict(get()["MONITOR"])


def dashboard() -> dict[str, Any]:
    """The effective ``TASKDECK["DASHBOARD"]`` settings."""
    return dict(get()["DASHBOARD"])


def payloads() -> dict[str, Any]:
    """The effective ``TASKDECK["PAYLOADS"]`` settings."""
    return dict(get()["PAYLOADS"])


def results() -> dict[str, Any]:
    """The effective ``TASKDECK["RESULTS"]`` settings."""
    return dict(get()["RESULTS"])


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKDECK":
        get.cache_clear()
        from taskdeck import payloads

        payloads.policy.cache_clear()
