"""taskdeck's settings: one ``TASKDECK`` dict merged over documented defaults.

Read at call time through :func:`get`, cached, and the cache is cleared on
Django's ``setting_changed`` so ``override_settings`` works in tests.

Keys
----
``DATA_DIR``
    Folder for the embedded default's files (Redis socket and append-only
    file, SQLite database, logs). Default: ``<BASE_DIR>/.taskdeck``.
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
"""

from __future__ import annotations

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
    user = getattr(settings, "TASKDECK", {}) or {}
    merged = {**DEFAULTS, **user}
    if merged["DATA_DIR"] is None:
        merged["DATA_DIR"] = Path(getattr(settings, "BASE_DIR", Path.cwd())) / ".taskdeck"
    merged["DATA_DIR"] = Path(merged["DATA_DIR"])
    merged["WORKERS"] = {name: {**WORKER_DEFAULTS, **group} for name, group in merged["WORKERS"].items()}
    return merged


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKDECK":
        get.cache_clear()
