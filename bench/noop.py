"""The bench's noop task for the Django projects, loaded with ``celery worker -I bench.noop``."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="bench.noop")
def noop() -> None:
    """Does nothing: the bench measures the machinery around it."""
