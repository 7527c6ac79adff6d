"""Django's Tasks framework on Celery: ``TASKS = {"default": {"BACKEND": "taskdeck.tasks.CeleryBackend"}}``.

- :mod:`~taskdeck.tasks.backend`: the backend (enqueue, results, checks);
- :mod:`~taskdeck.tasks.runner`: each Django task as a Celery task of its own name;
- :mod:`~taskdeck.tasks.priority`: Django priorities onto taskdeck's lanes;
- :mod:`~taskdeck.tasks.results`: results read from the results table;
- :mod:`~taskdeck.tasks.compat`: ``django.tasks`` or the ``django_tasks`` backport.

Importing this package needs neither: Celery's autodiscovery imports it as
the ``tasks`` module of the installed app ``taskdeck``. docs/django-tasks.md
has the guide.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "CeleryBackend":
        from taskdeck.tasks.backend import CeleryBackend

        return CeleryBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
