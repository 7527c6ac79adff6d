"""What waits in a queue, on real Redis with a real worker that does not consume it, in Chromium.

A message sent to a queue nothing declares (as a misspelt route does) is
found by the sampler and shown on the Queues page, in ``taskdeck status``,
the API and /metrics, flagged as having no consumer.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid

import pytest
import redis
from celery import current_app, shared_task
from celery.result import AsyncResult
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rich.console import Console

from maintenance.tasks import rebuild_search_index
from taskdeck import brokers
from taskdeck.brokers import RawMessage
from taskdeck.models import QueueSample, TaskRun
from taskdeck.monitor.messages import digest_ref, read
from taskdeck.monitor.queues import without_consumer
from taskdeck.terminal import render, snapshot
from tests.support.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TYPO = "low_priorty"  # a route's misspelling of low_priority: nothing declares or consumes it


def text_of(drawn: object) -> str:
    console = Console(width=200, record=True)
    console.print(drawn)
    return console.export_text()


def test_a_queue_nothing_declares_is_shown_everywhere_and_flagged(
    start_worker, start_recorder, live_server, page, accounts, login, client
):
    start_worker(["default"], concurrency=1)  # a worker, not on the misspelt queue
    start_recorder()
    rebuild_search_index.apply_async((1,), queue=TYPO)
    rebuild_search_index.apply_async((2,), queue=TYPO)
    sampled = QueueSample.objects.filter(queue=TYPO, ready=2, consumers=0)
    wait_for(sampled.exists, 90, f"the recorder to sample {TYPO} with no consumer")

    client.force_login(get_user_model().objects.get(username="operator"))
    (row,) = [q for q in client.get("/taskdeck/api/queues").json() if q["name"] == TYPO]
    assert (row["ready"], row["declared"], row["without_consumer"]) == (2, False, True)
    default = next(q for q in client.get("/taskdeck/api/queues").json() if q["name"] == "default")
    assert (default["declared"], default["without_consumer"]) == (True, False)

    metrics = client.get("/metrics").content.decode()
    # rebuild_search_index is a low-lane task: priority step 6.
    assert f'taskdeck_queue_messages_ready{{priority="6",queue="{TYPO}"}} 2.0' in metrics
    assert f'taskdeck_queue_without_consumer{{queue="{TYPO}"}} 1.0' in metrics
    assert 'taskdeck_queue_without_consumer{queue="default"} 0.0' in metrics

    # taskdeck status asks the broker itself (the recorder's samples aside).
    status = text_of(render(snapshot(app=current_app._get_current_object(), live=True)))
    assert f"{TYPO} (no consumer)" in status

    login(page, "operator")
    page.goto(f"{live_server.url}/taskdeck/queues/")
    row_ = page.locator(f"#queue-rows tr[data-queue='{TYPO}']")
    row_.wait_for()
    assert "not declared" in row_.text_content()
    assert row_.locator("[data-flag=no-consumer]").count() == 1
    assert page.locator("#queue-rows tr[data-queue='default'] [data-flag=no-consumer]").count() == 0


SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step


def key(queue: str, step: int) -> str:
    return queue + (f"{SEP}{step}" if step else "")


def grant(username: str, *codenames: str) -> None:
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.get(username=username)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def test_browse_delete_and_move_on_redis(broker, start_worker, accounts, client):
    from django.test import Client

    from taskdeck.models import AuditEntry

    # A real worker on the queue messages are moved to, not on low_priority: messages wait there.
    start_worker(["medium_priority"], concurrency=1)
    redis_ = redis.Redis.from_url(broker)
    top = [rebuild_search_index.apply_async((i,), queue="low_priority", priority=0).id for i in range(3)]
    low = [rebuild_search_index.apply_async((i,), queue="low_priority", priority=6).id for i in range(2)]
    kwargs = {"password": "hunter2", "api_key": "k", "shard_name": "eu"}
    secret = current_app.send_task(
        rebuild_search_index.name, (9,), kwargs, queue="low_priority", priority=6
    ).id
    redis_.lpush("low_priority", b"\xff\x00 not a message")  # junk, pushed by something else: the newest

    grant("operator", "manage_messages")
    operator, viewer = Client(), Client()
    operator.force_login(accounts["operator"])
    viewer.force_login(accounts["viewer"])
    url = "/taskdeck/api/queues/low_priority/messages"

    pages = {p["priority"]: p for p in viewer.get(url).json()["sub_queues"]}
    assert list(pages) == [0, 3, 6, 9]
    step0 = pages[0]["messages"]
    assert [m["task_id"] for m in step0] == [*top, None]  # oldest first, the junk last
    assert step0[-1]["problem"] and step0[-1]["ref"].startswith("raw-") and step0[-1]["args"] is None
    assert all(m["age"] is not None and m["age"] >= 0 for m in step0[:-1])  # the publisher's header
    assert [m["task_id"] for m in pages[6]["messages"]] == [*low, secret]
    shown = pages[6]["messages"][-1]
    assert shown["kwargs"] == {"password": "[redacted]", "api_key": "[redacted]", "shard_name": "eu"}
    assert shown["redacted"] and "hunter2" not in viewer.get(url).content.decode()
    assert (shown["task"], shown["args"], shown["priority"]) == (
        "maintenance.tasks.rebuild_search_index",
        [9],
        6,
    )

    # A page at a time, with where the next one starts.
    first = viewer.get(url, {"priority": 0, "limit": 2}).json()["sub_queues"]
    assert [(p["priority"], p["total"], p["next_offset"]) for p in first] == [(0, 4, 2)]
    assert [m["task_id"] for m in first[0]["messages"]] == top[:2]
    rest = viewer.get(url, {"priority": 0, "offset": 2, "limit": 2}).json()["sub_queues"][0]
    assert [m["position"] for m in rest["messages"]] == [2, 3] and rest["next_offset"] is None
    assert viewer.get(f"{url}/{top[1]}").json()["task_id"] == top[1]

    # Without the permission: refused, audited, nothing taken.
    refused = viewer.delete(f"{url}/{top[0]}")
    assert refused.status_code == 403
    assert AuditEntry.objects.filter(action="refused", username="viewer", ok=False).count() == 1
    moved = viewer.post(f"{url}/{top[0]}/move?to=medium_priority")
    assert moved.status_code == 403
    assert AuditEntry.objects.filter(action="refused", username="viewer").count() == 2
    assert redis_.llen("low_priority") == 4

    # A user scoped to another queue sees none of these, and cannot act on them (404, audited).
    from taskdeck.models import AccessScope

    scoped_user = get_user_model().objects.create_user("billing", is_staff=True)
    grant("billing", "view_dashboard", "manage_messages")
    AccessScope.objects.create(user=scoped_user, queues="medium_priority", tasks="")
    scoped = Client()
    scoped.force_login(scoped_user)
    assert scoped.get(url).status_code == 404
    assert scoped.get(f"{url}/{top[0]}").status_code == 404
    assert scoped.delete(f"{url}/{top[0]}").status_code == 404
    assert AuditEntry.objects.filter(action="refused", username="billing").count() == 1

    # With it: deleted (the junk too, by its digest), moved to a declared queue only.
    assert operator.delete(f"{url}/{top[0]}").status_code == 200
    assert operator.delete(f"{url}/{step0[-1]['ref']}").status_code == 200
    assert redis_.lrange("low_priority", 0, -1) == [
        raw(redis_, "low_priority", top[2]),
        raw(redis_, "low_priority", top[1]),
    ]
    nowhere = operator.post(f"{url}/{top[1]}/move?to=nowhere")
    assert nowhere.status_code == 409 and "not a queue this app declares" in nowhere.json()["message"]
    move = operator.post(f"{url}/{low[0]}/move?to=medium_priority")
    assert move.status_code == 200, move.content
    assert redis_.llen(key("low_priority", 6)) == 2
    # The moved message is a task call the worker of its new queue runs.
    assert AsyncResult(low[0]).get(timeout=60) == 0
    entries = AuditEntry.objects.filter(username="operator").order_by("at")
    assert [(e.action, e.ok) for e in entries] == [
        ("delete_message", True),
        ("delete_message", True),
        ("move_message", False),
        ("move_message", True),
    ]
    # A message a worker took first is not there to delete: 409, and nothing else goes.
    redis_.rpop("low_priority")  # the oldest, top[1], as a worker's BRPOP would
    gone = operator.delete(f"{url}/{top[1]}")
    assert gone.status_code == 409 and redis_.llen("low_priority") == 1


@shared_task(name="tests.login_to_supplier")
def login_to_supplier(user: str, password: str) -> str:
    return user


def test_keys_that_are_no_queue_are_neither_read_nor_changed(broker, accounts, client):
    """Only the app's queues are browsed: other programs' lists, kombu's tables, Celery's queues are 404."""
    from django.test import Client

    misspelt = f"{TYPO}_{uuid.uuid4().hex[:8]}"  # published to first here: kombu binds it now

    redis_ = redis.Redis.from_url(broker)
    cached = b'{"session": "SESSION-SECRET-abc"}'
    redis_.rpush("app:cache:sessions", cached)  # a list another program keeps in the same Redis
    redis_.rpush("celeryev.reply", cached)
    rebuild_search_index.apply_async((1,), queue=misspelt)  # bound by kombu on publish: a queue
    grant("operator", "manage_messages")
    operator, viewer = Client(), Client()
    operator.force_login(accounts["operator"])
    viewer.force_login(accounts["viewer"])
    keys_before = sorted(redis_.keys("*"))
    ref = digest_ref(cached)
    for name in ("app:cache:sessions", "celeryev.reply", "unacked", "_kombu.binding.default", "ü", "q" * 300):
        url = f"/taskdeck/api/queues/{name}/messages"
        listed, one = viewer.get(url), viewer.get(f"{url}/{ref}")
        assert (listed.status_code, one.status_code) == (404, 404), (name, listed.content)
        page = viewer.get(f"/taskdeck/queues/{name}/messages/")
        assert page.status_code == 404 and b"SESSION-SECRET" not in page.content + listed.content
        deleted = operator.delete(f"{url}/{ref}")
        assert deleted.status_code == 409 and "is not a queue of this app" in deleted.json()["message"]
        moved = operator.post(f"{url}/{ref}/move?to=default")
        assert moved.status_code == 409, moved.content
    assert redis_.lrange("app:cache:sessions", 0, -1) == [cached] == redis_.lrange("celeryev.reply", 0, -1)
    assert sorted(redis_.keys("*")) == keys_before
    (typo,) = viewer.get(f"/taskdeck/api/queues/{misspelt}/messages").json()["sub_queues"][2]["messages"]
    assert typo["task"] == rebuild_search_index.name


def test_a_positional_argument_named_like_a_secret_is_redacted_in_the_browser(broker, accounts, client):
    """``login(user, password)`` called positionally: ``password`` hidden, as in the captured payload."""
    sent = login_to_supplier.apply_async(("ann", "hunter2-positional"), queue="low_priority").id
    client.force_login(accounts["viewer"])
    url = "/taskdeck/api/queues/low_priority/messages"
    listed = client.get(url)
    (row,) = listed.json()["sub_queues"][0]["messages"]
    assert (row["task_id"], row["args"], row["redacted"]) == (sent, ["ann", "[redacted]"], True)
    page = client.get(f"/taskdeck/queues/low_priority/messages/{sent}/")
    for text in (listed.content, client.get(f"{url}/{sent}").content, page.content):
        assert b"hunter2" not in text


def test_arguments_their_caller_masked_with_argsrepr_are_hidden_in_the_browser(broker, accounts, client):
    """A call that gave its own ``argsrepr`` (Celery's way to keep a value out of views): hidden here too.

    taskdeck's publisher marks the message; a message of another publisher
    counts as masked when its ``argsrepr`` is not Celery's repr of its arguments.
    """
    secret = "card-4111111111111111"
    sent = rebuild_search_index.apply_async((secret,), argsrepr="('card-****',)", queue="low_priority").id
    plain = rebuild_search_index.apply_async(("catalog",), queue="low_priority").id
    client.force_login(accounts["viewer"])
    url = "/taskdeck/api/queues/low_priority/messages"
    listed = client.get(url)
    rows = {row["task_id"]: row for sub in listed.json()["sub_queues"] for row in sub["messages"]}
    assert (rows[sent]["args"], rows[sent]["redacted"]) == (None, True)
    assert (rows[plain]["args"], rows[plain]["redacted"]) == (["catalog"], False)
    page = client.get(f"/taskdeck/queues/low_priority/messages/{sent}/")
    for text in (listed.content, client.get(f"{url}/{sent}").content, page.content):
        assert secret.encode() not in text

    # The same messages as another publisher (plain Celery) writes them: no taskdeck headers.
    client_ = redis.Redis.from_url(broker)
    for task_id, args_shown in ((sent, None), (plain, ["catalog"])):
        envelope = json.loads(raw(client_, "low_priority", task_id))
        for header in ("taskdeck_sent", "taskdeck_masked"):
            envelope["headers"].pop(header, None)
        row = read(RawMessage(json.dumps(envelope).encode(), 0, 0), current_app)
        assert (row.problem, row.args) == (None, args_shown), task_id


def test_an_unreadable_message_previews_no_argument(broker):
    """A task message of a content type not read (or with a caller's argsrepr): its preview hides both."""
    sent = login_to_supplier.apply_async(("ann", "hunter2-positional"), queue="low_priority").id
    envelope = json.loads(raw(redis.Redis.from_url(broker), "low_priority", sent))
    envelope["content-type"] = "application/x-msgpack"  # not read: its arguments cannot be redacted
    envelope["headers"]["argsrepr"] = "('ann', 'hunter2-positional')"  # as plain Celery writes it
    item = json.dumps(envelope).encode()
    row = read(RawMessage(item, 0, 0), current_app)
    assert row.problem == "content type 'application/x-msgpack': only JSON is read"
    body = envelope["body"]
    assert "hunter2" not in row.preview and body[:20] not in row.preview
    assert "tests.login_to_supplier" in row.preview and f"[{len(body)} bytes, not shown]" in row.preview
    amqp = read(RawMessage(base64.b64decode(body), None, 0, {**envelope, "body": None}))
    assert "hunter2" not in amqp.preview and "not shown" in amqp.preview
    assert read(RawMessage(b"\xff junk", 0, 0)).preview == "\\xff junk"  # not an envelope: its bytes


def test_a_task_this_process_never_imported_reads_through_the_app_proxy(broker):
    """``celery.current_app`` (a proxy, as the views pass it) and a task name the process does not know."""
    sent = login_to_supplier.apply_async(("ann", "x"), queue="low_priority").id
    envelope = json.loads(raw(redis.Redis.from_url(broker), "low_priority", sent))
    envelope["headers"]["task"] = "shop.tasks.never_imported"
    row = read(RawMessage(json.dumps(envelope).encode(), 0, 0), current_app)
    assert (row.problem, row.task, row.args) == (None, "shop.tasks.never_imported", ["ann", "x"])


def test_a_queue_name_with_slashes_has_its_pages_and_api(broker, accounts):
    """Celery takes any queue name: ``billing/eu/slow`` on the Queues page was a 500 (no URL for it)."""
    from django.test import Client

    name = "billing/eu/slow"
    sent = rebuild_search_index.apply_async((1,), queue=name, priority=0).id  # bound by kombu on publish
    QueueSample.objects.create(queue=name, ready=1, consumers=0, sampled_at=dt.datetime.now(dt.UTC))
    grant("operator", "manage_messages")
    operator = Client()
    operator.force_login(accounts["operator"])
    queues = operator.get("/taskdeck/queues/")
    assert queues.status_code == 200, queues.content[:300]
    listing = f"/taskdeck/queues/{name}/messages/"
    assert f'href="{listing}"'.encode() in queues.content
    assert sent.encode() in operator.get(listing).content
    assert operator.get(f"{listing}{sent}/").status_code == 200
    api = f"/taskdeck/api/queues/{name}/messages"
    assert operator.get(api).json()["sub_queues"][0]["messages"][0]["task_id"] == sent
    assert operator.get(f"/taskdeck/api/queues/{name}/samples").json()[0]["ready"] == 1
    moved = operator.post(f"{api}/{sent}/move?to=low_priority")
    assert moved.status_code == 200, moved.content
    assert redis.Redis.from_url(broker).llen(name) == 0
    assert sent.encode() in redis.Redis.from_url(broker).lindex("low_priority", 0)


def test_a_page_of_large_messages_is_cut_one_message_is_whole(broker, accounts, client):
    """Messages of 300 kB: a page cuts each one's arguments as a payload is cut; one message is whole."""
    from taskdeck import payloads

    big = "x" * 300_000
    sent = [rebuild_search_index.apply_async((big, i), queue="low_priority", priority=0).id for i in range(3)]
    client.force_login(accounts["viewer"])
    url = "/taskdeck/api/queues/low_priority/messages"
    listed = client.get(url, {"priority": 0})
    rows = listed.json()["sub_queues"][0]["messages"]
    assert [(r["task_id"], r["truncated"]) for r in rows] == [(t, True) for t in sent]
    assert len(listed.content) < 3 * payloads.policy().max_bytes + 5_000  # was 900 kB
    assert rows[0]["args"][0].startswith("xxxx") and rows[0]["args"][0].endswith("…")
    whole = client.get(f"{url}/{sent[0]}").json()
    assert (whole["args"], whole["truncated"]) == ([big, 0], False)
    assert client.get("/taskdeck/queues/low_priority/messages/").status_code == 200


def test_a_page_of_large_messages_reads_about_page_bytes(broker, accounts, client, monkeypatch):
    """A page stops once its messages reach PAGE_BYTES (here 1 MB: 400 kB messages in their base64
    envelopes) and the next page starts after its last one: every message is listed once, in order;
    a page of 200 messages of 10 MiB was 2 GB in the web process. One message larger than the budget
    is a page of its own; a sub-queue of small messages still lists all of them."""
    monkeypatch.setattr(brokers, "PAGE_BYTES", 1_000_000)
    send = rebuild_search_index.apply_async
    big = [send(("x" * 300_000, i), queue="low_priority", priority=0).id for i in range(7)]
    huge = send(("y" * 900_000, 7), queue="low_priority", priority=0).id
    small = [send((i,), queue="low_priority", priority=3).id for i in range(5)]
    sizes = [len(raw(redis.Redis.from_url(broker), "low_priority", t)) for t in big]
    per_page = 1_000_000 // max(sizes)
    assert per_page == 2  # the premise: 2 messages fit, 3 do not

    client.force_login(accounts["viewer"])
    url = "/taskdeck/api/queues/low_priority/messages"
    pages, offset = [], 0
    while offset is not None:
        listed = client.get(url, {"priority": 0, "offset": offset, "limit": 200})
        assert listed.status_code == 200, listed.content
        (sub,) = listed.json()["sub_queues"]
        assert sub["total"] == 8 and sub["offset"] == offset
        pages.append([m["task_id"] for m in sub["messages"]])
        offset = sub["next_offset"]
    assert pages == [big[0:2], big[2:4], big[4:6], [big[6]], [huge]]

    # Every sub-queue at once: the budget is the page's, what is left of it after the first
    # sub-queue holds the small ones.
    both = {s["priority"]: s for s in client.get(url, {"limit": 200}).json()["sub_queues"]}
    assert [m["task_id"] for m in both[0]["messages"]] == big[0:2] and both[0]["next_offset"] == 2
    assert [m["task_id"] for m in both[3]["messages"]] == small and both[3]["next_offset"] is None
    # A budget the first message of priority 0 alone exceeds: each sub-queue still shows its first.
    monkeypatch.setattr(brokers, "PAGE_BYTES", 300_000)
    both = {s["priority"]: s for s in client.get(url, {"limit": 200}).json()["sub_queues"]}
    assert [m["task_id"] for m in both[0]["messages"]] == big[:1] and both[0]["next_offset"] == 1
    assert [m["task_id"] for m in both[3]["messages"]] == small[:1] and both[3]["next_offset"] == 1
    monkeypatch.setattr(brokers, "PAGE_BYTES", 32 * 1024 * 1024)
    rows = client.get(url, {"priority": 3, "limit": 200}).json()["sub_queues"][0]
    assert [m["task_id"] for m in rows["messages"]] == small and rows["next_offset"] is None


def test_a_search_of_a_queue_of_large_messages_holds_a_few_at_a_time(broker, monkeypatch):
    """Finding, deleting and moving one message reads the queue in windows of about FIND_BYTES
    (here 100 kB: 3 messages of 20 kB in their envelopes), not 1,000 messages at a time (a
    queue of 10 MiB messages was 10 GB in the web process); control: small messages are read
    1,000 at a time."""
    from taskdeck.brokers import FIND_FIRST, FIND_WINDOW, SearchWindows
    from taskdeck.monitor import messages

    budget = brokers.FIND_BYTES
    monkeypatch.setattr(brokers, "FIND_BYTES", 100_000)
    held: list[tuple[int, int]] = []
    record = SearchWindows.held

    def spied(self: SearchWindows, count: int, size: int) -> None:
        held.append((count, size))
        record(self, count, size)

    monkeypatch.setattr(SearchWindows, "held", spied)
    ids = [rebuild_search_index.apply_async(("x" * 20_000, i), queue="low_priority").id for i in range(40)]
    assert messages.find(current_app, "low_priority", ids[-1]).task_id == ids[-1]
    assert messages.remove(current_app, "low_priority", ids[-2]).task_id == ids[-2]
    assert messages.remove(current_app, "low_priority", ids[-3], to="default").task_id == ids[-3]
    # A search's first window is FIND_FIRST messages, before their size is known; then about 100 kB.
    later = [(count, size) for count, size in held if count != FIND_FIRST]
    assert held[0][0] == FIND_FIRST and len(later) > 10
    assert all(count <= 5 and size <= 100_000 for count, size in later), held
    assert [m.task_id for w in messages.browse(current_app, "default") for m in w.messages] == [ids[-3]]

    held.clear()
    monkeypatch.setattr(brokers, "FIND_BYTES", budget)
    small = [rebuild_search_index.apply_async((i,), queue="medium_priority").id for i in range(1_500)]
    assert messages.find(current_app, "medium_priority", small[-1]).task_id == small[-1]
    assert [count for count, _ in held] == [FIND_FIRST, FIND_WINDOW, FIND_WINDOW]


def raw(client: redis.Redis, queue: str, task_id: str) -> bytes:
    for step in (0, 3, 6, 9):
        for item in client.lrange(key(queue, step), 0, -1):
            if task_id.encode() in item:
                return item
    raise AssertionError(f"{task_id} not in {queue}")


def test_the_browser_pages_in_chromium(broker, live_server, page, accounts, login, shoot):
    """No worker consumes ``low_priority`` here: what is sent waits, and the pages show it."""
    redis_ = redis.Redis.from_url(broker)
    first, second = (
        rebuild_search_index.apply_async((i,), queue="low_priority", priority=0).id for i in (1, 2)
    )
    kwargs = {"token": "s3cr3t-value"}
    hidden = current_app.send_task(
        rebuild_search_index.name, (3,), kwargs, queue="low_priority", priority=6
    ).id
    redis_.lpush("low_priority", b'{"body": 1}')  # JSON, not kombu's envelope
    grant("operator", "manage_messages")
    login(page, "operator")

    page.goto(f"{live_server.url}/taskdeck/queues/low_priority/messages/")
    step0 = page.locator("[data-sub-queue='0'] tbody tr")
    assert step0.evaluate_all("rows => rows.map(r => r.dataset.ref)")[:2] == [first, second]
    assert step0.nth(2).get_attribute("data-unreadable") == "1" and "unreadable" in step0.nth(2).inner_text()
    row6 = page.locator(f"[data-sub-queue='6'] tr[data-ref='{hidden}']")
    assert "redacted" in row6.inner_text() and "s3cr3t" not in page.content()
    shoot(page, "message-browser")

    # One message: its arguments, then moved to a declared queue with the form.
    page.click(f"[data-sub-queue='0'] tr[data-ref='{first}'] a")
    assert page.inner_text("#args").split() == ["[", "1", "]"]
    page.select_option("#move-to", "medium_priority")
    page.click("#move")
    page.wait_for_url(f"{live_server.url}/taskdeck/queues/low_priority/messages/")
    assert "moved from low_priority to medium_priority" in page.inner_text("body")
    assert redis_.llen("medium_priority") == 1 and first.encode() in redis_.lindex("medium_priority", 0)

    # Deleted from its page (the confirm dialog is accepted).
    page.click(f"[data-sub-queue='0'] tr[data-ref='{second}'] a")
    page.click("#delete")
    page.wait_for_url(f"{live_server.url}/taskdeck/queues/low_priority/messages/")
    assert "deleted from low_priority" in page.inner_text("body")
    assert page.locator(f"tr[data-ref='{second}']").count() == 0 and redis_.llen("low_priority") == 1

    # The read-only role sees the messages and no action.
    login(page, "viewer")
    page.goto(f"{live_server.url}/taskdeck/queues/low_priority/messages/{hidden}/")
    assert "[redacted]" in page.inner_text("#kwargs")
    assert page.locator("#delete, #move").count() == 0


# --- bad list items: shown as unreadable rows, never an error ---------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
ENVELOPE_KEYS = st.sampled_from(["body", "headers", "properties", "content-type", "content-encoding"])
ITEMS = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(ENVELOPE_KEYS, JSON, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "body": st.one_of(
                st.text(max_size=40), st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
            ),
            "content-type": st.sampled_from(
                ["application/json", "application/x-python-serialize", "text/plain"]
            ),
            "headers": st.one_of(
                JSON, st.fixed_dictionaries({"task": JSON, "id": JSON}, optional={"eta": JSON})
            ),
            "properties": st.fixed_dictionaries({"body_encoding": st.sampled_from(["base64", "none", 7])}),
        }
    ).map(lambda v: json.dumps(v).encode()),
)


@given(raw=ITEMS)
@hypothesis_settings(max_examples=300, deadline=None)
def test_any_list_item_reads_as_a_row(raw):
    row = read(RawMessage(raw, 0, 0))
    assert row.ref and row.size == len(raw)
    assert row.problem is not None or (
        row.task and isinstance(row.args, list) and isinstance(row.kwargs, dict)
    )
    if row.problem is not None:
        assert row.args is None and row.kwargs is None and row.preview is not None


@given(items=st.lists(ITEMS, min_size=1, max_size=6))
@hypothesis_settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_bad_items_in_a_real_queue_are_unreadable_rows_never_a_server_error(broker, admin_client, items):
    redis_ = redis.Redis.from_url(broker)
    redis_.delete("low_priority")
    redis_.lpush("low_priority", *items)
    answer = admin_client.get("/taskdeck/api/queues/low_priority/messages", {"priority": 0})
    assert answer.status_code == 200, answer.content[:300]
    rows = answer.json()["sub_queues"][0]["messages"]
    assert len(rows) == len(items)
    for row in rows:
        assert row["problem"] is not None or row["task"]
        # Each row has a page (an unreadable one too), found by its ref.
    ref = rows[0]["ref"]
    assert admin_client.get(f"/taskdeck/api/queues/low_priority/messages/{ref}").status_code == 200
    page = admin_client.get("/taskdeck/queues/low_priority/messages/")
    assert page.status_code == 200


def test_browse_delete_and_move_on_rabbitmq(rabbitmq_app, start_amqp_worker, accounts, monkeypatch):
    """basic_get without ack, then the channel closes: every message goes back, in its place, redelivered."""
    from taskdeck.dashboard.actions import Actions
    from taskdeck.models import AuditEntry
    from taskdeck.monitor import messages
    from taskdeck.monitor.sampler import QueueSampler

    start_amqp_worker(["notifications"], concurrency=1)  # a real worker, not on the queues below
    name = rebuild_search_index.name
    sent = [rabbitmq_app.send_task(name, (i,), queue="low_priority").id for i in range(3)]
    secret = rabbitmq_app.send_task(name, (3,), {"secret": "x"}, queue="low_priority").id

    (window,) = messages.browse(rabbitmq_app, "low_priority")
    assert [m.task_id for m in window.messages] == [*sent, secret] and window.total == 4
    assert window.messages[-1].kwargs == {"secret": "[redacted]"}
    (again,) = messages.browse(rabbitmq_app, "low_priority", offset=1, limit=2)
    assert [m.task_id for m in again.messages] == sent[1:3]  # given back in place
    assert all(m.redelivered for m in again.messages)  # the cost: RabbitMQ marks them redelivered
    # A page stops at PAGE_BYTES (here: one message), each in place, every one once.
    monkeypatch.setattr(brokers, "PAGE_BYTES", 1)
    paged, offset = [], 0
    while offset is not None:
        (one,) = messages.browse(rabbitmq_app, "low_priority", offset=offset)
        paged.append([m.task_id for m in one.messages])
        offset = one.next_offset
    assert paged == [[t] for t in [*sent, secret]]
    monkeypatch.undo()
    assert messages.find(rabbitmq_app, "low_priority", secret).task_id == secret

    actions = Actions(rabbitmq_app, accounts["operator"])
    assert actions.delete_message("low_priority", sent[1]).ok
    moved = actions.move_message("low_priority", sent[0], "default")
    assert moved.ok, moved.message
    (left,) = messages.browse(rabbitmq_app, "low_priority")
    assert [m.task_id for m in left.messages] == [sent[2], secret]
    (there,) = messages.browse(rabbitmq_app, "default")
    assert [m.task_id for m in there.messages] == [sent[0]]
    assert not actions.delete_message("low_priority", sent[1]).ok  # gone already: refused, not an error
    outcomes = AuditEntry.objects.order_by("at").values_list("action", "ok")
    assert list(outcomes) == [("delete_message", True), ("move_message", True), ("delete_message", False)]

    # A queue nothing declares: found through the runs sent to it, flagged without consumer.
    typo = rabbitmq_app.send_task(name, (5,), queue="low_priorty").id
    # The run as the recorder writes it from the task-sent event.
    now = time.time()
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    TaskRun.objects.create(
        task_id=typo, name=name, queue="low_priorty", state="SENT", state_at=now, first_seen_at=at, sent_at=at
    )
    sampler = QueueSampler(
        brokers.for_url(rabbitmq_app.conf.broker_url),
        rabbitmq_app.connection_for_read,
        lambda: ["default", "notifications"],
        1,
    )
    rows = {s.queue: s for s in sampler.read(time.time())}
    assert (rows["low_priorty"].ready, rows["low_priorty"].consumers) == (1, 0)
    assert without_consumer(rows["low_priorty"]) and without_consumer(rows["default"])  # the moved one waits
    assert rows["notifications"].consumers == 1 and not without_consumer(rows["notifications"])
