"""Each bad message of issue 12, named: the worker refuses it, records it, dead-letters it, and lives on.

Every test runs on Redis and on RabbitMQ (the ``bus`` fixture), publishes
the bad message raw with kombu followed by a good task on the same queue,
and checks that the good task ran, that the bad message is ``REJECTED`` with
its reason and kept in the dead-letter store with its raw headers and body,
that the worker's main process is the one it started with, and that nothing
is left queued or unacknowledged.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from celery.result import AsyncResult
from django_celery_results.models import TaskResult

from taskdeck.models import DeadLetter, TaskRun
from tests.guard.conftest import Bus
from tests.support.messages import call_body, publish, redis_depth, task_headers
from tests.support.probe import record
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def send_good(bus, tag: str) -> AsyncResult:
    task_id = str(uuid.uuid4())
    publish(bus.app, call_body(tag), headers=task_headers(task_id))
    return AsyncResult(task_id, app=bus.app)


def refused(bus, task_id: str, probe) -> tuple[TaskResult, DeadLetter]:
    """The REJECTED row and the dead letter of ``task_id``, once the good task after it has run."""
    row = wait_for(lambda: TaskResult.objects.filter(task_id=task_id).first(), 60, f"{task_id}'s row")
    letter = DeadLetter.objects.get(task_id=task_id)  # dead-lettered before it is recorded
    assert row.status == "REJECTED", row.result
    assert probe.started(task_id) is None, "a refused message must never run"
    return row, letter


def keeps_serving(bus, pid: int, probe) -> None:
    good = send_good(bus, "after")
    wait_for(lambda: probe.started(good.id), 60, "a good task after the bad one")
    assert bus.worker.alive() and bus.worker.pid == pid
    nothing_left(bus, [good.id])


def nothing_left(bus, finished: list[str]) -> None:
    """Once ``finished`` tasks are stored (late acks: acknowledged after), nothing is queued or unacked."""
    for task_id in finished:
        wait_for(
            lambda t=task_id: TaskResult.objects.filter(task_id=t, status="SUCCESS").exists(), 60, "done"
        )
    wait_for(lambda: bus.leftover() == 0, 30, "no message left queued or unacknowledged")


def test_a_body_that_is_not_a_task_call_does_not_stop_the_worker(bus, probe):
    """Body ``"hello"`` with valid headers: Celery's main process exits on it (too many values to unpack)."""
    pid = bus.worker.pid
    task_id = str(uuid.uuid4())
    publish(bus.app, b'"hello"', headers=task_headers(task_id))
    row, letter = refused(bus, task_id, probe)
    assert "the body must be a list of three items, [args, kwargs, embed]" in row.result
    assert "got str 'hello'" in row.result
    assert bytes(letter.body) == b'"hello"' and letter.headers["task"] == record.name
    assert letter.properties["content_type"] == "application/json"
    assert letter.properties["routing_key"] == "default"
    assert letter.kind == "message" and letter.source == bus.worker.hostname
    wait_for(lambda: f"[{task_id}] from queue 'default' refused" in bus.worker.output(), 30, "the log line")
    keeps_serving(bus, pid, probe)


def test_a_message_that_never_ran_is_not_recorded_as_success(bus, probe):
    """Body ``[{"a": 1}, [], {}]``: Celery's tracer reported it as a success it never was."""
    pid = bus.worker.pid
    task_id = str(uuid.uuid4())
    publish(
        bus.app,
        json.dumps([{"a": 1}, [], {}]).encode(),
        headers=task_headers(task_id, argsrepr="('forged',)"),
    )
    row, letter = refused(bus, task_id, probe)
    assert "the body's args (item 0) must be a list, got dict {'a': 1}" in row.result
    assert json.loads(bytes(letter.body)) == [{"a": 1}, [], {}]
    keeps_serving(bus, pid, probe)
    assert "succeeded" not in bus.worker.output().split(task_id, 1)[-1].split("\n", 1)[0]
    if bus.name == "redis":  # the recorder listens on the test's Redis
        run = wait_for(lambda: TaskRun.objects.filter(task_id=task_id).first(), 60, "the run in the history")
        wait_for(lambda: TaskRun.objects.get(task_id=task_id).state == "REJECTED", 30, "REJECTED")
        assert run.state != "SUCCESS"


#: (body, headers over good ones, the reason given): each of a wrong type where Celery reads it.
BAD_SHAPES = [
    ("[[], {}, {}]", {"id": 42}, "header 'id' must be a task id (text of 1 to 255 characters), got int 42"),
    (
        "[[], {}, {}]",
        {"id": None},
        "header 'id' must be a task id (text of 1 to 255 characters), got NoneType",
    ),
    (
        "[[], {}, {}]",
        {"task": ["x"]},
        "header 'task' must be a task name (text of 1 to 255 characters), got list",
    ),
    ("[[], {}, {}]", {"timelimit": [1]}, "header 'timelimit' must be [hard, soft] seconds"),
    ("[[], {}, {}]", {"eta": "tomorrow"}, "header 'eta' must be an ISO 8601 date and time"),
    ("[[], {}, {}]", {"retries": "many"}, "header 'retries' must be a whole number"),
    ("[[], {}, {}]", {"argsrepr": {"a": 1}}, "header 'argsrepr' must be text or null"),
    ("[[], 5, {}]", {}, "the body's kwargs must be a mapping, got int 5"),
    ('[[], {}, {"callbacks": "x"}]', {}, "the body's 'callbacks' must be a list of signatures"),
    ('[[], {}, {"chord": 1}]', {}, "the body's 'chord' must be a signature"),
    ("[[], {}, 7]", {}, "the body's embed (item 2) must be a mapping or null, got int 7"),
    ('{"args": 1}', {}, "the body's 'args' must be a list, got int 1"),
]


def test_bad_headers_and_body_shapes_are_refused_with_their_reason(bus, probe):
    pid = bus.worker.pid
    for body, headers, _ in BAD_SHAPES:
        publish(bus.app, body.encode(), headers={**task_headers(), **headers})
    for body, _, reason in BAD_SHAPES:
        letter = wait_for(lambda r=reason: DeadLetter.objects.filter(reason__contains=r).first(), 60, reason)
        # Dead-lettered first, then recorded (under a new id when the message had none usable).
        row = wait_for(lambda i=letter.task_id: TaskResult.objects.filter(task_id=i).first(), 30, "its row")
        assert row.status == "REJECTED" and reason in row.result
        assert bytes(letter.body) == body.encode()
    keeps_serving(bus, pid, probe)


def test_undecodable_bytes_bad_compression_and_other_content_types_are_refused(bus, probe):
    pid = bus.worker.pid
    ids = [str(uuid.uuid4()) for _ in range(3)]
    publish(bus.app, b"\xff\xfe[[], {}, {}]", headers=task_headers(ids[0]))
    publish(bus.app, call_body("x"), headers=task_headers(ids[1], compression="application/x-gzip"))
    publish(bus.app, b"- a\n", headers=task_headers(ids[2]), content_type="application/x-yaml")
    rows = [refused(bus, task_id, probe)[0] for task_id in ids]
    assert "body cannot be decoded" in rows[0].result and "can't decode byte 0xff" in rows[0].result
    assert "body cannot be decoded" in rows[1].result
    assert "application/x-yaml" in rows[2].result
    keeps_serving(bus, pid, probe)


def test_a_message_over_the_workers_size_limit_is_refused(bus, probe):
    """``TASKDECK["WORKER_MAX_MESSAGE_BYTES"]`` is 10 MiB by default; one byte more is refused unread."""
    pid = bus.worker.pid
    task_id = str(uuid.uuid4())
    body = call_body("x" * (10 * 1024 * 1024))
    publish(bus.app, body, headers=task_headers(task_id))
    row, letter = refused(bus, task_id, probe)
    assert f"the body is {len(body):,} bytes, over the worker's limit of 10,485,760" in row.result
    assert letter.truncated and letter.body_size == len(body) and len(bytes(letter.body)) == 1024 * 1024
    keeps_serving(bus, pid, probe)


def test_a_body_that_inflates_past_the_limit_and_headers_over_it_are_refused_unread(bus, probe):
    """A gzip body of about 11 kB that inflates to 11 MB is refused after inflating 10 MiB + 1
    bytes at most (kombu inflated 292 kB to 300 MB in the main process before anything could look,
    on Redis and on RabbitMQ). On Redis (AMQP headers must fit one frame), an ``argsrepr`` of
    11 MB: it ran, and was stored whole in the results table. Control: the same gzip body
    inflating to 1 MB runs."""
    import zlib

    pid = bus.worker.pid
    bomb, fine = str(uuid.uuid4()), str(uuid.uuid4())
    for task_id, size in ((bomb, 11_000_000), (fine, 1_000_000)):
        body = zlib.compress(call_body("x" * size), 9)
        publish(bus.app, body, headers={**task_headers(task_id), "compression": "application/x-gzip"})
    row, _ = refused(bus, bomb, probe)
    assert "the body inflates (application/x-gzip) to over the worker's limit of 10,485,760" in row.result
    wait_for(lambda: probe.started(fine), 60, "the compressed message within the limit to run")
    if bus.name == "redis":
        long = str(uuid.uuid4())
        publish(bus.app, call_body("y"), headers=task_headers(long, argsrepr="z" * 11_000_000))
        row, _ = refused(bus, long, probe)
        assert "its headers hold 11,000" in row.result
    keeps_serving(bus, pid, probe)


def test_an_unknown_task_is_a_failure_and_kept_for_requeueing(bus, probe):
    pid = bus.worker.pid
    task_id = str(uuid.uuid4())
    publish(bus.app, call_body(1), headers=task_headers(task_id, name="billing.tasks.ghost"))
    row = wait_for(lambda: TaskResult.objects.filter(task_id=task_id).first(), 60, "the FAILURE row")
    assert row.status == "FAILURE" and "NotRegistered" in row.result
    # Celery stores the FAILURE itself (task_unknown), apart from the dead letter: either may come first.
    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), 30, "the dead letter")
    assert letter.task == "billing.tasks.ghost" and "is not registered on this worker" in letter.reason
    keeps_serving(bus, pid, probe)


def redis_bus(broker, start_worker, start_recorder, probe, gossip: bool = False) -> tuple[Bus, redis.Redis]:
    """Redis only: a probed worker on ``default``, the recorder of its records, a client on its database."""
    from celery import current_app

    from tests.support.probe import PROBE_ARGS

    start_recorder()
    worker = start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env, gossip=gossip)
    client = redis.Redis.from_url(broker)
    return Bus("redis", current_app, worker, lambda: redis_depth(client) + client.hlen("unacked")), client


def test_headers_that_are_not_a_mapping_do_not_stop_the_worker(broker, start_worker, start_recorder, probe):
    """Redis only: its envelope is JSON and can carry anything; AMQP headers are always a table."""
    bus, client = redis_bus(broker, start_worker, start_recorder, probe)
    pid = bus.worker.pid
    publish(bus.app, call_body("x"), headers=["task", "id"])
    letter = wait_for(
        lambda: DeadLetter.objects.filter(reason__contains="envelope").first(), 60, "the letter"
    )
    assert "the broker's envelope of the message cannot be read (AttributeError:" in letter.reason
    assert letter.headers["headers"] == ["task", "id"]
    assert json.loads(bytes(letter.body)) == [["x"], {}, {"callbacks": None, "errbacks": None, "chain": None}]
    row = TaskResult.objects.filter(task_id=letter.task_id)
    wait_for(lambda: row.filter(status="REJECTED").exists(), 30, "the REJECTED result row")
    keeps_serving(bus, pid, probe)


def test_a_list_item_that_is_not_json_does_not_stop_the_worker(broker, start_worker, start_recorder, probe):
    """Redis only: an item pushed by something other than kombu; kombu's parse of it stopped the worker."""
    bus, client = redis_bus(broker, start_worker, start_recorder, probe)
    pid = bus.worker.pid
    client.lpush("default", b"\xff not JSON {")
    letter = wait_for(
        lambda: DeadLetter.objects.filter(reason__contains="envelope").first(), 60, "the letter"
    )
    assert "the broker's envelope of the message cannot be read" in letter.reason
    assert bytes(letter.body) == b"\xff not JSON {"
    # The letter and the row are two writes: the row may land a moment after the letter.
    row = TaskResult.objects.filter(task_id=letter.task_id)
    wait_for(lambda: row.filter(status="REJECTED").exists(), 30, "the REJECTED result row")
    keeps_serving(bus, pid, probe)


def test_a_poison_message_waiting_when_the_worker_starts_does_not_stop_it(
    broker, start_worker, start_recorder, probe
):
    """What the embedded Redis kept on disk after a crash loop: the next start met it first and died."""
    from celery import current_app
    from kombu import Exchange, Queue

    from tests.support.probe import PROBE_ARGS

    with current_app.connection_for_write() as conn:
        Queue("default", Exchange("default", type="direct"), routing_key="default")(
            conn.default_channel
        ).declare()
    client = redis.Redis.from_url(broker)
    poison, good = str(uuid.uuid4()), str(uuid.uuid4())
    publish(current_app, b'"hello"', headers=task_headers(poison))
    publish(current_app, call_body("after"), headers=task_headers(good))
    assert redis_depth(client) == 2  # both wait for the worker
    start_recorder()
    worker = start_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env)
    wait_for(lambda: probe.started(good), 60, "the good task queued behind the poison one")
    bus = Bus("redis", current_app, worker, lambda: redis_depth(client) + client.hlen("unacked"))
    row, letter = refused(bus, poison, probe)
    assert "got str 'hello'" in row.result and bytes(letter.body) == b'"hello"'
    keeps_serving(bus, worker.pid, probe)


def test_junk_worker_events_do_not_stop_a_worker(broker, start_worker, start_recorder, probe):
    """Celery's gossip read other workers' events unchecked: one junk event stopped every worker at once."""
    from celery.events.event import get_exchange

    bus, _ = redis_bus(broker, start_worker, start_recorder, probe, gossip=True)
    pid = bus.worker.pid
    junk = [
        ("worker.heartbeat", "string"),  # TypeError: string indices must be integers
        ("worker.heartbeat", {"type": "worker-heartbeat", "hostname": "evil@x", "timestamp": "abc"}),
        ("worker.online", [1, 2]),
        ("worker.heartbeat", {"type": "worker-heartbeat", "hostname": "evil@x", "active": "lots"}),
    ]
    with bus.app.connection_for_write() as conn:
        exchange = get_exchange(conn, name=bus.app.conf.event_exchange)
        producer = conn.Producer(serializer="json")
        for routing_key, body in junk:
            producer.publish(body, exchange=exchange, routing_key=routing_key, declare=[exchange])
    wait_for(
        lambda: all(
            f"cannot be read ({kind}:" in bus.worker.output() for kind in ("TypeError", "ValueError")
        ),
        60,
        "the worker to skip the junk events",
    )
    keeps_serving(bus, pid, probe)


def test_protocol_1_and_hybrid_bodies_are_checked_where_celery_reads_them(bus, probe):
    """Protocol 1 (no 'task' header: the body holds the fields Celery makes headers of) and hybrid
    bodies (protocol 2 headers, a body with 'args'). ``"timelimit": "ab"`` in such a body ran the task,
    then stopped the worker (ValueError in the pool's timer) and, acked late, again at every restart;
    ``"args": "abc"`` ran the task with three arguments. Control: a good protocol 1 message runs."""
    pid = bus.worker.pid
    name = record.name
    p1 = [str(uuid.uuid4()) for _ in range(4)]
    hybrid = str(uuid.uuid4())
    cases = [
        ({"task": name, "id": p1[0], "args": ["a"], "kwargs": {}, "timelimit": "ab"}, {}),
        ({"task": name, "id": p1[1], "args": "abc", "kwargs": {}}, {}),
        ({"task": name, "id": p1[2], "args": [], "kwargs": {}, "retries": "x"}, {}),
        ({"task": name, "id": "x" * 400, "args": [], "kwargs": {}}, {}),
        ({"args": [], "kwargs": {}, "timelimit": [None, "x"]}, task_headers(hybrid)),
    ]
    for body, headers in cases:
        publish(bus.app, json.dumps(body).encode(), headers=headers)
    reasons = {
        p1[0]: "the body's 'timelimit' must be [hard, soft] seconds",
        p1[1]: "the body's 'args' must be a list, got str 'abc'",
        p1[2]: "the body's 'retries' must be a whole number",
        hybrid: "the body's 'timelimit' must be [hard, soft] seconds",
    }
    for task_id, reason in reasons.items():
        row, _ = refused(bus, task_id, probe)
        assert reason in row.result, row.result
    wait_for(
        lambda: DeadLetter.objects.filter(reason__contains="the body's 'id' must be a task id").exists(),
        60,
        "the long id refused",
    )
    good = str(uuid.uuid4())
    body = {"task": name, "id": good, "args": ["p1"], "kwargs": {}}
    publish(bus.app, json.dumps(body).encode(), headers={})
    wait_for(lambda: probe.started(good), 60, "a good protocol 1 message to run")
    keeps_serving(bus, pid, probe)


def test_arguments_nested_too_deep_for_the_pool_do_not_wedge_the_worker(bus, probe):
    """Nested 900 deep, a body decodes but cannot be pickled to the pool (RecursionError): refused,
    and the pool's slot given back. Each such message kept a slot: two of them wedged a worker of
    concurrency 2 (alive, heartbeating, running nothing); here, of concurrency 1, the first did."""
    pid = bus.worker.pid
    deep = "[" * 900 + "]" * 900
    embed = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for task_id in ids:
        body = f"[[{deep}], {{}}, {embed}]"
        publish(bus.app, body.encode(), headers=task_headers(task_id, argsrepr="(deep)"))
    for task_id in ids:
        letter = wait_for(lambda t=task_id: DeadLetter.objects.filter(task_id=t).first(), 60, "refused")
        assert "RecursionError" in letter.reason
    keeps_serving(bus, pid, probe)


def test_junk_published_on_the_event_and_control_channels_does_not_stop_a_worker(
    broker, start_worker, start_recorder, probe
):
    """Redis: a raw PUBLISH of a non-envelope on the channel of worker events or of remote control
    raised while kombu built the message, and stopped every worker of the broker."""
    bus, client = redis_bus(broker, start_worker, start_recorder, probe, gossip=True)
    pid = bus.worker.pid
    db = int(broker.rsplit("/", 1)[1])
    for channel, junk in ((f"/{db}.celeryev/worker.heartbeat", "5"), (f"/{db}.celery.pidbox", "[]")):
        assert client.publish(channel, junk) >= 1, f"nothing listens on {channel}"
    time.sleep(2)
    keeps_serving(bus, pid, probe)


def test_a_compressed_worker_event_is_not_inflated_past_the_limit_on_rabbitmq(
    rabbitmq_app, start_amqp_worker, probe
):
    """RabbitMQ: kombu inflated a compressed message whole as it was made, on any channel of the
    worker: 300 kB of gzip published as a worker event became 300 MB in every worker's main process
    (gossip listens to the event exchange). The guard inflates at most WORKER_MAX_MESSAGE_BYTES and
    one byte: the worker's peak memory stays within 100 MB of what it was, the event is skipped, and
    the worker keeps serving. Control: without the guard on the gossip channel, the peak grows 300 MB."""
    import zlib

    from celery.events.event import get_exchange

    from tests.support.messages import amqp_depth
    from tests.support.probe import PROBE_ARGS

    worker = start_amqp_worker(["default"], concurrency=1, args=PROBE_ARGS, env=probe.env, gossip=True)
    bus = Bus("rabbitmq", rabbitmq_app, worker, lambda: (worker.stop(), amqp_depth(rabbitmq_app))[1])

    def peak_mb() -> float:
        status = open(f"/proc/{worker.pid}/status").read()  # noqa: SIM115, PTH123
        return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024

    before = peak_mb()
    bomb = zlib.compress(b'{"type": "worker-heartbeat", "x": "' + b"0" * 300_000_000 + b'"}', 9)
    with rabbitmq_app.connection_for_write() as conn:
        exchange = get_exchange(conn, name=rabbitmq_app.conf.event_exchange)
        conn.Producer().publish(
            bomb,
            exchange=exchange,
            routing_key="worker.heartbeat",
            declare=[exchange],
            content_type="application/json",
            content_encoding="utf-8",
            headers={"compression": "application/x-gzip"},
        )
    wait_for(lambda: "skipped a worker event that cannot be read" in worker.output(), 60, "the event skipped")
    assert peak_mb() - before < 100, (before, peak_mb())
    keeps_serving(bus, worker.pid, probe)
