"""System checks of what is installed: database driver and the Celery internals taskdeck hooks.

Registered with the other checks (``taskdeck.apps``); ``taskdeck up``, the
web server and ``manage.py check`` run them at start, so a project that
cannot store a result is told before it sends its first task.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


def _postgres_driver() -> str:
    """The driver Django's PostgreSQL backend uses: ``"psycopg"`` (3) or ``"psycopg2"``."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return "psycopg" if is_psycopg3 else "psycopg2"


@register(Tags.compatibility)
def check_install(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return _check_postgres_driver() + _check_hooked_internals()


def _check_postgres_driver(databases: dict[str, Any] | None = None) -> list[CheckMessage]:
    aliases = [
        alias
        for alias, database in (settings.DATABASES if databases is None else databases).items()
        if str(database.get("ENGINE", "")).endswith(".postgresql")
    ]
    if not aliases:
        return []
    try:
        driver = _postgres_driver()
    except ImportError:
        return []  # Django's own error says no driver is installed, at the first query
    if driver == "psycopg":
        return []
    return [
        Error(
            f"DATABASES {', '.join(map(repr, aliases))} use PostgreSQL through psycopg2: taskdeck "
            "writes task results and monitoring rows through psycopg 3, and every stored result would fail.",
            hint="pip install 'taskdeck[postgres]' (psycopg 3); Django uses it instead of psycopg2 "
            "once it is installed, with the same ENGINE.",
            id="taskdeck.E020",
        )
    ]


def _check_hooked_internals() -> list[CheckMessage]:
    from taskdeck import compat

    problems = compat.changed()
    if not problems:
        return []
    import celery
    import kombu

    return [
        Warning(
            f"celery {celery.__version__} / kombu {kombu.__version__} changed internals taskdeck "
            f"hooks: {'; '.join(problems)}.",
            hint="Install the Celery and kombu versions taskdeck's requirements allow "
            "(pip install taskdeck without --no-deps), or a taskdeck release made for these.",
            id="taskdeck.W020",
        )
    ]
