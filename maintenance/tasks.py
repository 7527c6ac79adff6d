"""Maintenance: slow, low-priority housekeeping (regex route to the low lane)."""

import time

from celery import shared_task


@shared_task
def purge_expired_sessions() -> int:
    """Delete expired Django sessions; run by beat every hour."""
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted


@shared_task
def rebuild_search_index(shard: int, seconds: float = 0.05) -> int:
    """Rebuild one shard of a search index: slow work nobody is waiting for."""
    time.sleep(seconds)
    return shard


@shared_task(bind=True)
def reindex_catalog(self, items: int, seconds_per_item: float = 0.1) -> int:
    """Reindex ``items`` products, reporting progress as it goes (the dashboard draws a progress bar).

    Progress is the custom ``PROGRESS`` state with ``{"current", "total"}``,
    stored through the result backend as Celery's ``update_state`` does.
    """
    for done in range(items):
        self.update_state(
            state="PROGRESS", meta={"current": done, "total": items, "message": f"item {done + 1}"}
        )
        time.sleep(seconds_per_item)
    return items
