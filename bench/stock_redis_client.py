"""Loaded into a worker (``-I``) before its consumer is built: kombu's own client per operation back.

The control of taskdeck.brokers.redis_client in bench/profile.py
(``--variant 'stock-client:include=bench.stock_redis_client'``).
"""

from __future__ import annotations

from celery import current_app

from taskdeck.brokers.redis_client import ReuseRedisClient

current_app.steps["consumer"].discard(ReuseRedisClient)
