"""Redis workers reuse one redis-py client for acknowledgement bookkeeping (taskdeck.brokers.redis_client)."""

from __future__ import annotations

from typing import Any

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from taskdeck.brokers.redis_client import reuse_client


def count_clients(channel: Any) -> list[Any]:
    """The redis-py clients ``channel`` makes from now on (one entry each)."""
    made: list[Any] = []
    client_class = channel.Client

    def counting_client(**kwargs: Any) -> Any:
        made.append(kwargs)
        return client_class(**kwargs)

    channel.Client = counting_client
    return made


def _deliver_and_ack(url: str, n: int, reuse: bool) -> tuple[int, int, Any]:
    """Publish ``n`` messages and consume and ack them on one channel; (clients made, delivered, unacked)."""
    queue = Queue("reuse", Exchange("reuse", type="direct"), routing_key="reuse")
    with Connection(url) as conn:
        producer = Producer(conn.channel())
        for i in range(n):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key="reuse", declare=[queue])
        channel = conn.channel()
        made = count_clients(channel)
        if reuse:
            assert reuse_client(channel)
        delivered: list[int] = []

        def on_message(body: Any, message: Any) -> None:
            delivered.append(body["i"])
            message.ack()

        with Consumer(channel, [queue], callbacks=[on_message], prefetch_count=2):
            while len(delivered) < n:
                conn.drain_events(timeout=10)
        unacked = redis.Redis.from_url(url).hlen("unacked")
        return len(made), len(delivered), unacked


def test_a_redis_channel_makes_one_client_for_every_delivery_and_ack(broker: str) -> None:
    made, delivered, unacked = _deliver_and_ack(broker, 20, reuse=True)
    assert delivered == 20
    assert unacked == 0  # every ack removed its record
    assert made == 1


def test_without_it_kombu_makes_clients_per_message(broker: str) -> None:
    """The control: kombu's own channel makes a client per delivery and per ack."""
    made, delivered, unacked = _deliver_and_ack(broker, 20, reuse=False)
    assert delivered == 20 and unacked == 0
    assert made >= 40


def test_other_transports_are_left_alone() -> None:
    with Connection("memory://") as conn:
        channel = conn.channel()
        assert not reuse_client(channel)
        assert "_create_client" not in vars(channel)


def test_a_channel_is_wrapped_once(broker: str) -> None:
    with Connection(broker) as conn:
        channel = conn.channel()
        assert reuse_client(channel)
        assert not reuse_client(channel)
        assert channel._create_client() is channel._create_client()
        assert channel._create_client(asynchronous=True) is not channel._create_client()


def _close_after_the_connection_let_go(url: str, reuse: bool) -> tuple[Exception | None, int]:
    """A channel holding an unacknowledged message, closed after its transport let go of the
    connection, as a worker's consumer closes it when the broker restarts; (what the close raised,
    messages still in ``unacked``)."""
    queue = Queue("reuse", Exchange("reuse", type="direct"), routing_key="reuse")
    conn = Connection(url)
    channel = conn.default_channel
    if reuse:
        assert reuse_client(channel)
    Producer(channel).publish({"i": 1}, exchange=queue.exchange, routing_key="reuse", declare=[queue])
    got: list[Any] = []
    consumer = Consumer(channel, [queue], callbacks=[lambda body, message: got.append(message)])
    consumer.consume()
    conn.drain_events(timeout=10)
    assert len(got) == 1  # delivered, not acknowledged
    channel._disconnect_pools()
    channel.connection.client = None  # what closing the connection first leaves
    raised = None
    try:
        conn.maybe_close_channel(channel)  # connection errors ignored, as Celery's close does
    except Exception as exc:  # noqa: BLE001 - the control's AttributeError, returned to the test
        raised = exc
    return raised, redis.Redis.from_url(url).hlen("unacked")


def test_a_channel_closed_after_its_connection_raises_what_the_close_ignores(broker: str) -> None:
    """The worker reconnects instead of exiting; the message waits in ``unacked``, not lost."""
    raised, unacked = _close_after_the_connection_let_go(broker, reuse=True)
    assert raised is None and unacked == 1


def test_without_it_kombu_raises_attribute_error_there(broker: str) -> None:
    """The control: kombu's own channel raises what stops a worker (``Unrecoverable error``)."""
    raised, _ = _close_after_the_connection_let_go(broker, reuse=False)
    assert isinstance(raised, AttributeError) and "hostname" in str(raised)


def test_a_producer_sends_tasks_and_their_sent_events_with_one_client(broker: str) -> None:
    """taskdeck's task sender: the message and its task-sent event, for every task, on one client
    (kombu makes one per publish: two a task, each dearer than the LPUSH it sends)."""
    from celery import current_app

    with current_app.producer_or_acquire() as producer:
        channel = producer.channel
        made = count_clients(channel)
        for i in range(30):
            current_app.send_task(
                "tests.support.ledger.work", args=(i, 0), queue="reuse-sent", producer=producer
            )
    assert current_app.conf.task_send_sent_event
    client = redis.Redis.from_url(broker)
    assert sum(client.llen(key) for key in client.keys("reuse-sent*")) == 30
    assert len(made) <= 1, len(made)


def test_tasks_sent_without_a_producer_share_one_client(broker: str) -> None:
    """``send_task`` with no producer (what ``task.delay()`` does): a producer from the app's pool,
    whose channel is a promise of its connection's default one, reuses that channel's client."""
    from celery import current_app

    with current_app.producer_or_acquire() as producer:
        channel = producer.channel  # made here once; the pool keeps the connection and its channel
    made = count_clients(channel)
    for i in range(30):
        current_app.send_task("tests.support.ledger.work", args=(i, 0), queue="reuse-pooled")
    client = redis.Redis.from_url(broker)
    assert sum(client.llen(key) for key in client.keys("reuse-pooled*")) == 30
    assert len(made) <= 1, len(made)
