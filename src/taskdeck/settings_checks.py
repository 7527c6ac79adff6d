"""System checks of what a project adopting taskdeck may get wrong in its settings.

- a Celery setting that blinds monitoring (``taskdeck.W021``-``W023``): without
  task events, task-sent events or extended results the dashboard fills with
  nameless runs reconstructed from the results table, and nothing else says why;
- a key of ``TASKDECK`` (or of its ``MONITOR``, ``RESULTS``, ``DASHBOARD``
  dicts) that taskdeck does not know (``taskdeck.E021``): a typo would
  silently leave the default in force;
- an app taskdeck needs missing from ``INSTALLED_APPS`` (``taskdeck.E022``), a
  beat scheduler that is not installed (``taskdeck.E023``).

The Celery values checked are the project's Celery app's (``current_app``,
which ``create_celery_app`` makes): its preset (:mod:`taskdeck.preset`)
included, as a worker would see them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from taskdeck import conf

#: (Celery setting, check id, what is lost without it).
MONITORING_SETTINGS = (
    (
        "worker_send_task_events",
        "taskdeck.W021",
        "workers send no task events: the recorder sees no run start, finish or fail as it happens, "
        "and runs appear late, rebuilt from the results table",
    ),
    (
        "task_send_sent_event",
        "taskdeck.W022",
        "producers send no task-sent event: the dashboard shows no queued runs, no wait times and "
        "no task sent but never started",
    ),
    (
        "result_extended",
        "taskdeck.W023",
        "results are stored without task name, arguments or worker: runs rebuilt from the results "
        "table have no name",
    ),
)

#: Dicts of TASKDECK whose keys are checked against their defaults.
NESTED = {
    "MONITOR": conf.MONITOR_DEFAULTS,
    "RESULTS": conf.RESULTS_DEFAULTS,
    "DASHBOARD": conf.DASHBOARD_DEFAULTS,
    "PAYLOADS": conf.PAYLOADS_DEFAULTS,
}


def _celery_app() -> Any:
    from celery import current_app

    return current_app


@register(Tags.compatibility)
def check_adoption(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    app = _celery_app()
    namespace = getattr(app, "namespace", None) or "CELERY"
    return (
        check_monitoring(app.conf, namespace)
        + check_unknown_keys(getattr(settings, "TASKDECK", None) or {})
        + check_types(getattr(settings, "TASKDECK", None) or {})
        + _check_apps(app.conf)
        + check_access()
        + check_payloads()
    )


def check_access() -> list[CheckMessage]:
    """``MONITOR``'s tokens and networks: a wrong type must not open (or silently close) the monitor."""
    from taskdeck.policy import configured_tokens, parse_networks

    try:
        monitor = conf.monitor()
    except Exception:  # not a dict: taskdeck.E021 says so
        return []
    messages: list[CheckMessage] = []
    tokens = monitor.get("TOKENS")
    if not isinstance(tokens, list | tuple | set | frozenset) or len(configured_tokens(tokens)) != len(
        tokens
    ):
        messages.append(
            Error(
                f"TASKDECK['MONITOR']['TOKENS'] must be a list of non-empty strings, got {tokens!r:.60}: "
                "no token is accepted until it is.",
                hint='Write it as a list, even for one token: "TOKENS": [os.environ["TASKDECK_TOKEN"]].',
                id="taskdeck.E024",
            )
        )
    for key in ("METRICS_NETWORKS", "METRICS_TRUSTED_PROXIES"):
        bad = parse_networks(monitor.get(key))[1]
        if bad:
            messages.append(
                Error(
                    f"TASKDECK['MONITOR'][{key!r}] has entries that are not IP networks: "
                    f"{', '.join(bad)[:200]}; they admit no one.",
                    hint='A list of addresses or networks, e.g. ["127.0.0.1/32", "10.0.0.0/8"].',
                    id="taskdeck.E025",
                )
            )
    return messages


def check_payloads() -> list[CheckMessage]:
    """``PAYLOADS``: a bad value would make every publish log a capture error (the tasks still go)."""
    import re

    from django.utils.module_loading import import_string

    user = getattr(settings, "TASKDECK", None) or {}
    if not isinstance(user, Mapping) or not isinstance(user.get("PAYLOADS", {}), Mapping):
        return []  # taskdeck.E021
    given = conf.payloads()
    problems: list[tuple[str, str, str]] = []
    size = given.get("MAX_BYTES")
    if isinstance(size, bool) or not isinstance(size, int) or size < 64:
        problems.append(
            ("MAX_BYTES", f"must be a whole number of bytes, at least 64, got {size!r:.60}", "e.g. 16384")
        )
    keys = given.get("REDACT_KEYS")
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str) and k for k in keys):
        problems.append(
            (
                "REDACT_KEYS",
                f"must be a list of non-empty regular expressions, got {keys!r:.60}",
                'e.g. ["passw", "token"]',
            )
        )
    else:
        for pattern in keys:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(
                    (
                        "REDACT_KEYS",
                        f"has {pattern!r:.60}, not a regular expression ({exc})",
                        "Escape it with re.escape().",
                    )
                )
    hook = given.get("REDACT_HOOK")
    if hook is not None:
        if not isinstance(hook, str):
            problems.append(
                (
                    "REDACT_HOOK",
                    f"must be a dotted path or None, got {hook!r:.60}",
                    '"myproject.payloads.redact"',
                )
            )
        else:
            try:
                found = import_string(hook)
            except ImportError as exc:
                problems.append(
                    (
                        "REDACT_HOOK",
                        f"{hook!r} cannot be imported ({exc})",
                        "A dotted path to hook(task_name, args, kwargs).",
                    )
                )
            else:
                if not callable(found):
                    problems.append(
                        (
                            "REDACT_HOOK",
                            f"{hook!r} is not callable",
                            "A dotted path to hook(task_name, args, kwargs).",
                        )
                    )
    for key in ("EXCLUDE_TASKS", "EXCLUDE_QUEUES"):
        value = given.get(key)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            problems.append(
                (key, f"must be a list of names or globs, got {value!r:.60}", 'e.g. ["billing.*"]')
            )
    return [
        Error(
            f"TASKDECK['PAYLOADS'][{key!r}] {what}: every publish would fail to capture its payload "
            "(the task is still sent, and cannot be retried from the dashboard).",
            hint=hint,
            id="taskdeck.E027",
        )
        for key, what, hint in problems
    ]


def check_monitoring(celery_conf: Mapping[str, Any], namespace: str = "CELERY") -> list[CheckMessage]:
    """One warning per setting in :data:`MONITORING_SETTINGS` that is off in ``celery_conf``."""
    return [
        Warning(
            f"{namespace}_{name.upper()} is {celery_conf.get(name)!r}: {lost}.",
            hint=f"Remove {namespace}_{name.upper()} from your settings (taskdeck's preset turns it on "
            f"in apps made by create_celery_app) or set it to True.",
            id=check_id,
        )
        for name, check_id, lost in MONITORING_SETTINGS
        if not celery_conf.get(name) and not (name == "worker_send_task_events" and _records(celery_conf))
    ]


def _records(celery_conf: Mapping[str, Any]) -> bool:
    """Whether the result backend is the record one (or a subclass): its records carry what task events would.

    Named as Celery names it (``module:Class``, ``module.Class``, an alias, a
    URL) or given as the class itself; one that cannot be imported is not.
    """
    from celery.app.backends import by_url

    from taskdeck.results.record import RecordBackend

    backend = celery_conf.get("result_backend")
    if isinstance(backend, str) and backend:
        try:
            backend, _ = by_url(backend)
        except Exception:  # noqa: BLE001 - not importable: Celery's worker says so; not the record backend
            return False
    return isinstance(backend, type) and issubclass(backend, RecordBackend)


def check_unknown_keys(user: Mapping[str, Any]) -> list[CheckMessage]:
    """An error per key of ``TASKDECK`` (and of its nested dicts) that taskdeck does not read."""
    if not isinstance(user, Mapping):
        return [
            Error(
                f"TASKDECK must be a dict, got {type(user).__name__}.",
                hint="See taskdeck/conf.py for its keys.",
                id="taskdeck.E021",
            )
        ]
    messages = _unknown("TASKDECK", user, conf.DEFAULTS)
    for key, defaults in NESTED.items():
        nested = user.get(key)
        if nested is not None and not isinstance(nested, Mapping):
            messages.append(
                Error(
                    f"TASKDECK[{key!r}] must be a dict, got {type(nested).__name__}.",
                    hint=f"Allowed keys: {', '.join(sorted(defaults))}.",
                    id="taskdeck.E021",
                )
            )
        elif nested:
            messages += _unknown(f"TASKDECK[{key!r}]", nested, defaults)
    return messages


def check_types(user: Mapping[str, Any]) -> list[CheckMessage]:
    """An error per value of ``TASKDECK`` (and of its nested dicts) whose type its default does not have.

    The default says the type: a number where a number is expected (and not
    negative), a bool where a bool is, text, a list, a dict. Without this, a
    wrong type (``"WEB_WORKERS": "two"``) only fails when a process uses it,
    as a traceback or a restart loop.
    """
    if not isinstance(user, Mapping):
        return []  # taskdeck.E021
    messages = _wrong_types("TASKDECK", user, conf.DEFAULTS)
    for key, defaults in NESTED.items():
        nested = user.get(key)
        if isinstance(nested, Mapping):
            messages += _wrong_types(f"TASKDECK[{key!r}]", nested, defaults)
    return messages


def _wrong_types(where: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key, value in given.items():
        if key not in defaults or conf.fits(key, value, defaults[key]):
            continue
        messages.append(
            Error(
                f"{where}[{key!r}] must be {conf.expected_type(key, defaults[key])}, got {value!r:.80} "
                f"({type(value).__name__}): its default applies.",
                hint=f"The default is {defaults[key]!r:.80}; see taskdeck/conf.py.",
                id="taskdeck.E026",
            )
        )
    return messages


def _unknown(where: str, given: Mapping[str, Any], known: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for key in given:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        messages.append(
            Error(
                f"{where} has an unknown key {key!r}: taskdeck ignores it, so its default applies.",
                hint=f"{hint}Known keys: {', '.join(sorted(known))}.",
                id="taskdeck.E021",
            )
        )
    return messages


def _check_apps(celery_conf: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    backend = str(celery_conf.get("result_backend") or "")
    if (
        backend.startswith(("taskdeck.", "django-db"))
        and "django_celery_results" not in settings.INSTALLED_APPS
    ):
        messages.append(
            Error(
                f"result backend {backend!r} stores results in django-celery-results' table, but "
                "'django_celery_results' is not in INSTALLED_APPS.",
                hint="Add 'django_celery_results' to INSTALLED_APPS (before 'taskdeck') and migrate.",
                id="taskdeck.E022",
            )
        )
    scheduler = str(celery_conf.get("beat_scheduler") or "")
    if scheduler and not find_spec(scheduler.split(":")[0].split(".")[0]):
        messages.append(
            Error(
                f"beat scheduler {scheduler!r} is not installed: beat would fail at start.",
                hint="pip install 'taskdeck[beat]' (Django < 6.1), or remove CELERY_BEAT_SCHEDULER to "
                "use Celery's file scheduler.",
                id="taskdeck.E023",
            )
        )
    return messages
