"""Bare Celery as it comes: no Django, Celery's own defaults, results ignored.

The reference of bench/throughput.py: prefetch multiplier 4, messages
acknowledged on receipt, no events. (bench/bare.py is the same app with
taskdeck's worker settings: late acks, prefetch 1.) A result backend is set
only when ``BENCH_RESULT_BACKEND`` is, for the latency probe, which asks for
its results with ``ignore_result=False``; the drained tasks store nothing.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_bare_defaults", broker=os.environ["CELERY_BROKER"])
app.conf.update(
    task_ignore_result=True,
    result_backend=os.environ.get("BENCH_RESULT_BACKEND") or None,
    accept_content=["application/json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    """Does nothing: the bench measures the machinery around it."""
