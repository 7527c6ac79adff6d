"""Huey's side of the reference row (bench/references.py): its Redis storage, as it comes, and the noop.

Run by ``huey_consumer bench.huey_noop.huey`` with ``BENCH_REDIS`` set to the bench's Redis database.
"""

from __future__ import annotations

import os

from huey import RedisHuey

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS"])


@huey.task()
def noop() -> None:
    """Does nothing: the bench measures the machinery around it (a ``None`` result is not stored)."""
