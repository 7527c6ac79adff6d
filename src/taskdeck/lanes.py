"""Priority lanes: the notes' high/medium/low queues, plus in-queue priority.

A lane is a queue (``TASKDECK['LANES']``) and a message priority. The queue
isolates capacity when a lane has workers of its own; the priority lets a
high task overtake a backlog on a worker that consumes several lanes, on
brokers that order by priority (RabbitMQ with ``x-max-priority``, Redis
through priority sub-queues). The priority number is the broker's own:
0 is the top on Redis, 9 on RabbitMQ; :mod:`taskdeck.brokers` knows which.

Several lanes may name the same queue: then only the priority orders them.
That is how lanes share workers on RabbitMQ, where a worker consuming several
queues prefers none of them (:func:`lanes_for`, docs/lanes.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import current_app
from celery.canvas import Signature
from kombu import Exchange, Queue

from taskdeck import brokers, conf
from taskdeck.errors import UnknownLaneError

#: The notes' queues, one per lane, highest first.
NOTES_LANES = {"high": "high_priority", "medium": "medium_priority", "low": "low_priority"}
#: The queue every lane shares where lanes share one queue.
SHARED_QUEUE = "lanes"


def lanes_for(
    broker_url: str, lanes: Mapping[str, str] = NOTES_LANES, shared_queue: str = SHARED_QUEUE
) -> dict[str, str]:
    """``TASKDECK["LANES"]`` for lanes that share workers, on the broker of ``broker_url``.

    On Redis ``lanes`` as given: a worker consuming several lane queues takes
    from them in the order it lists them (``queue_order_strategy:
    "priority"``), and each lane keeps a queue of its own, so a lane can also
    have workers of its own. On RabbitMQ every lane goes to ``shared_queue``:
    a worker consuming several queues takes from them in turn, so only
    in-queue priority (``x-max-priority``) lets a high task overtake a low
    backlog. Workers dedicated to one lane then need ``lanes`` as given, with
    a queue per lane. Pure: safe to call from ``settings.py``::

        TASKDECK = {"LANES": lanes_for(CELERY_BROKER_URL)}
    """
    if brokers.for_url(broker_url).one_lane_queue:
        return dict.fromkeys(lanes, shared_queue)
    return dict(lanes)


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
