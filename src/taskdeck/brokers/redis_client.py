"""Redis workers and producers: one redis-py client per channel, not one or two per task.

kombu's Redis channel makes a new ``redis.Redis`` client, on its one
connection pool, for each command it sends outside its consumer loop; a
worker's main process does that twice per task: when a message is
delivered (recorded in the ``unacked`` hash) and when it is acknowledged
(the record removed). redis-py 8's client fills a table of 169 response
callbacks, with an upper-cased copy of each name, in its constructor:
626 µs per client measured on the project's 2-core machine under load, more
than the rest of a noop task's bookkeeping in that process
(docs/benchmarks.md, "Where the worker's time goes").

:class:`ReuseRedisClient` gives the task consumer's channel one client,
made the first time one is needed and made again if the channel's pool is
replaced; taskdeck's task sender does the same for each producer's channel
(kombu makes a client per publish: the message and its task-sent event, two
a task). A client holds no connection of its own: each command takes one
from the pool and gives it back, as with a new client, so nothing else
changes; the channel's asynchronous client (the consumer loop's
``BRPOP``) is kombu's, untouched. Other transports are left alone.

The same hook keeps a broker restart from stopping the worker: a channel
closed after its connection was let go asks for a client to restore its
unacknowledged messages, and kombu, making a pool from a connection that is
gone, raises ``AttributeError``, which Celery treats as unrecoverable. Here it
is a connection error, which Celery's close ignores (docs/reliability.md,
guarantee 4).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import bootsteps


def reuse_client(channel: Any) -> bool:
    """Make ``channel`` (a kombu Redis channel) reuse one synchronous client; False if it is not one."""
    from kombu.transport.redis import Channel

    if not isinstance(channel, Channel) or "_create_client" in vars(channel):
        return False
    create = channel._create_client  # kombu's, bound
    cached: list[Any] = []

    def _create_client(asynchronous: bool = False) -> Any:
        if asynchronous:
            return create(asynchronous=True)
        transport = channel.connection
        if transport is None or transport.client is None:
            # The connection is being closed (a broker restart) and the channel, closing after it,
            # asks for a client to restore its unacknowledged messages: kombu would make a pool from
            # a connection that is gone and raise AttributeError, which stops the worker. A
            # connection error is what Celery's close ignores; the worker then reconnects, and the
            # messages stay in ``unacked`` until the visibility timeout gives them back.
            raise redis.ConnectionError("the channel's broker connection is closed")
        if not cached or cached[0].connection_pool is not channel.pool:
            cached[:] = [create()]
        return cached[0]

    channel._create_client = _create_client  # type: ignore[method-assign]
    return True


class ReuseRedisClient(bootsteps.StartStopStep):
    """Consumer step: the task consumer's Redis channel reuses one client (see the module)."""

    name = "taskdeck.brokers.redis_client.ReuseRedisClient"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        # The Tasks step makes a new consumer and channel on each (re)connection; this step starts after it.
        consumer = getattr(c, "task_consumer", None)
        if consumer is not None:
            reuse_client(consumer.channel)
