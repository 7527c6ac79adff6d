"""Dramatiq's side of the reference row (bench/references.py): its Redis broker, as it comes, and the noop.

Run by ``dramatiq bench.dramatiq_noop`` with ``BENCH_REDIS`` set to the bench's Redis database.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_REDIS"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def noop() -> None:
    """Does nothing: the bench measures the machinery around it."""
