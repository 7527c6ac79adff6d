"""The bare reference: a minimal Celery app, no Django, results ignored.

Same broker and the same worker knobs as the Django apps under test
(acks late, prefetch 1, JSON, the Redis transport options of
core/settings.py), so the ratio to it isolates what storing results costs.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_bare", broker=os.environ["CELERY_BROKER"])
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    accept_content=["application/json"],
    task_serializer="json",
    result_serializer="json",
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600, "queue_order_strategy": "priority"},
    worker_send_task_events=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing: the bench measures the machinery around it."""
