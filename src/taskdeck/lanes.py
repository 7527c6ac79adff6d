"""Priority lanes: the notes' high/medium/low queues, plus in-queue priority.

A lane is a queue (``TASKDECK['LANES']``) and a message priority. The queue
isolates capacity when a lane has workers of its own; the priority lets a
high task overtake a backlog on a worker that consumes several lanes, on
brokers that order by priority (RabbitMQ with ``x-max-priority``, Redis
through priority sub-queues). The priority number is the broker's own:
0 is the top on Redis, 9 on RabbitMQ; :mod:`taskdeck.brokers` knows which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import current_app
from celery.canvas import Signature
from kombu import Exchange, Queue

from taskdeck import brokers, conf
from taskdeck.errors import UnknownLaneError


def lane_names() -> list[str]:
    """Lane names, highest priority first."""
    return list(conf.get()["LANES"])


def lane_queue(lane: str) -> str:
    lanes = conf.get()["LANES"]
    try:
        return str(lanes[lane])
    except KeyError:
        raise UnknownLaneError(lane, list(lanes)) from None


def lane_options(lane: str, broker_url: str | None = None) -> dict[str, Any]:
    """``apply_async`` options that put a message in ``lane``: queue and priority."""
    queue = lane_queue(lane)
    broker = brokers.for_url(broker_url or current_app.conf.broker_url or "")
    return {"queue": queue, "priority": broker.lane_priority(lane_names().index(lane))}


def in_lane(signature: Signature, lane: str) -> Signature:
    """Return ``signature`` set to run in ``lane``; works inside chains and groups.

    >>> in_lane(send_invoice.s(order_id), "high").apply_async()
    """
    return signature.set(**lane_options(lane, signature.app.conf.broker_url))


def declare_queues(broker_url: str, names: Iterable[str]) -> list[Queue]:
    """Queues for ``CELERY_TASK_QUEUES``, declared with the broker's priority arguments.

    Each is a direct exchange of its own name with a routing key of its own
    name, which is what Celery creates for a missing queue. Pure: safe to
    call from ``settings.py``.
    """
    arguments = brokers.for_url(broker_url).queue_arguments()
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)
        for name in dict.fromkeys(names)
    ]
