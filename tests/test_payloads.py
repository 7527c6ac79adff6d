"""Payload capture at publish: redaction, the size cap, and that nothing in it stops a publish.

Live round trips (a worker, the recorder, the dashboard's retry) are in
tests/dashboard/test_payload_retry.py; here the capture itself, and the
publisher on a real Redis with no worker.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
import redis
from celery import current_app
from celery.app.amqp import task_message
from django.conf import settings
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kombu.utils.json import loads

from taskdeck import app as taskdeck_app
from taskdeck import payloads
from taskdeck.monitor import attempts
from taskdeck.monitor.merge import apply, fact_from_event
from taskdeck.settings_checks import check_adoption
from tests.support.ledger import keep

SECRET = "hunter2-s3cr3t"


def payloads_settings(**changes: Any) -> Any:
    return override_settings(TASKDECK={**settings.TASKDECK, "PAYLOADS": changes})


def policy(**changes: Any) -> payloads.Policy:
    with payloads_settings(**changes):
        return payloads.policy()


def decoded(found: payloads.Captured) -> dict[str, Any]:
    return json.loads(found.text)


def test_values_under_secret_keys_are_redacted_at_any_depth_and_by_parameter_name():
    p = policy()
    found = payloads.capture(
        "t",
        ("alice", SECRET, [{"profile": {"API-Key": SECRET, "name": "ann"}}]),
        {"password": SECRET, "opts": {"retries": 3, "x_auth_token": SECRET}, "when": dt.date(2026, 1, 2)},
        p,
        params=("user", "passwd"),
    )
    out = decoded(found)
    assert SECRET not in found.text and out["redacted"] is True and out["truncated"] is False
    assert out["args"] == ["alice", "[redacted]", [{"profile": {"API-Key": "[redacted]", "name": "ann"}}]]
    assert out["kwargs"]["opts"] == {"retries": 3, "x_auth_token": "[redacted]"}
    # Encoded as kombu encodes the message body: the date comes back a date.
    assert payloads.read(found.text).kwargs["when"] == dt.date(2026, 1, 2)
    assert "redacted" in payloads.refusal("t", payloads.read(found.text))


def test_a_plain_payload_is_exact_and_sendable():
    args, kwargs = ("x" * 3000, [1, 2.5, None, True], "é\x00'\""), {"note": "ünï", "n": {"deep": [1]}}
    found = payloads.capture("t", args, kwargs, policy())
    read = payloads.read(found.text)
    assert (read.args, read.kwargs, read.truncated, read.redacted) == (
        list(args[:1]) + [args[1], args[2]],
        kwargs,
        False,
        False,
    )
    assert found.text.isascii()  # NUL escaped: PostgreSQL's text takes it
    assert payloads.refusal("t", read) is None


def test_a_large_payload_is_cut_to_the_cap_and_refused():
    found = payloads.capture(
        "t", ("y" * 50_000, list(range(5000))), {"k": "z" * 9000}, policy(MAX_BYTES=4096)
    )
    assert len(found.text) <= 4096 + 40 and found.truncated
    read = payloads.read(found.text)
    assert read.truncated and read.args[0].startswith("yyy") and read.args[0].endswith("…")
    assert "cut to fit" in payloads.refusal("t", read)


def test_a_hook_and_a_callers_own_repr_redact_too():
    p = policy(REDACT_HOOK="tests.test_payloads.drop_card")
    out = decoded(payloads.capture("t", ("4111 1111 1111 1111",), {}, p))
    assert out["args"] == ["****"] and out["redacted"] is True
    # A caller's kwargsrepr hides something: the kwargs are not captured at all.
    out = decoded(payloads.capture("t", (1,), {"pin": "0000"}, policy(), masked=(False, True)))
    assert (out["args"], out["kwargs"], out["redacted"]) == ([1], None, True)


def drop_card(task: str, args: list, kwargs: dict) -> tuple[list, dict] | None:
    return (["****"], kwargs) if args and isinstance(args[0], str) and args[0].startswith("4111") else None


def test_not_captured_and_excluded():
    assert not policy(EXCLUDE_TASKS=["billing.*"]).applies("billing.tasks.charge", "default")
    assert not policy(EXCLUDE_QUEUES=["secret*"]).applies("t", "secret_queue")
    assert not policy(ENABLED=False).applies("t", "default")
    assert policy().applies("t", "default")
    assert "not captured" in payloads.refusal("t", payloads.read(""))


# --- the publisher: a capture error never stops a publish -------------------------


def message(args: Any, kwargs: Any) -> Any:
    return task_message(
        headers={"id": "i", "task": "t", "argsrepr": "()", "kwargsrepr": "{}"},
        properties={},
        body=(args, kwargs, {}),
        sent_event={"uuid": "i", "name": "t", "args": "()", "kwargs": "{}"},
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
KEYS = (
    st.text(max_size=12) | st.sampled_from(["password", "Api_Key", "x-token", "k" * 20_000]) | st.integers()
)


def nest(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"password" if i == 0 else "k": value} if i % 2 else [value]
    return value


class Unencodable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


VALUES = (
    JSON
    | st.dictionaries(KEYS, JSON, max_size=4)
    | st.integers(0, 120).map(nest)
    | st.sampled_from(
        [object(), {1, 2}, b"\xff", Unencodable(), {("tuple", "key"): 1}, dt.datetime(2026, 1, 1)]
    )
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(VALUES, max_size=3), kwargs=st.dictionaries(KEYS, VALUES, max_size=3))
def test_capture_never_raises_and_never_shows_a_secret(args, kwargs):
    pattern = re.compile("passw|token|secret|api[-_]?key", re.IGNORECASE)
    msg = message(args, kwargs)
    before = payloads.ERRORS.count
    with payloads_settings(MAX_BYTES=2048):
        taskdeck_app._capture(current_app.amqp, "t", msg, "default", (False, False))  # raises nothing
    text = msg.sent_event.get("payload")
    if text is None:
        assert payloads.ERRORS.count == before + 1  # counted (and logged)
        return
    out = json.loads(text)
    assert set(out) == {"args", "kwargs", "truncated", "redacted"}
    assert len(text) <= 2048 + 40

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if pattern.search(key) and item is not None:
                    assert item == payloads.REDACTED or (out["truncated"] and item in ("…",)), (key, item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(out["args"])
    walk(out["kwargs"])
    if not out["truncated"] and not out["redacted"]:
        assert payloads.read(text).args == loads(json.dumps(out["args"]))


def test_a_failing_hook_is_counted_and_the_task_is_still_sent(broker):
    client = redis.Redis.from_url(broker)
    before = payloads.ERRORS.count
    with payloads_settings(REDACT_HOOK="tests.test_payloads.broken_hook"):
        result = keep.apply_async(("x",), {"password": SECRET}, queue="default")
    assert payloads.ERRORS.count == before + 1
    (raw,) = client.lrange("default", 0, -1)
    sent = json.loads(raw)
    assert sent["headers"]["id"] == result.id
    # What is secret is not known: the reprs are not shown either.
    assert SECRET not in raw.decode() or raw.decode().count(SECRET) == 1  # only in the body itself
    assert sent["headers"]["kwargsrepr"] == taskdeck_app.NOT_SHOWN


def broken_hook(task: str, args: list, kwargs: dict) -> None:
    raise ValueError("the hook is broken")


def test_the_published_reprs_are_redacted(broker):
    client = redis.Redis.from_url(broker)
    keep.apply_async(("x",), {"password": SECRET, "n": 1}, queue="default")
    (raw,) = client.lrange("default", 0, -1)
    headers = json.loads(raw)["headers"]
    assert SECRET not in headers["kwargsrepr"] and "'password': '[redacted]'" in headers["kwargsrepr"]


# --- the recorder's side ------------------------------------------------------------


def test_the_recorder_keeps_only_a_well_formed_payload_and_the_earliest():
    sent = {"type": "task-sent", "uuid": "i", "timestamp": 10.0, "name": "t"}
    good = json.dumps({"args": [1], "kwargs": {}, "truncated": False, "redacted": False})
    later = json.dumps({"args": [2], "kwargs": {}, "truncated": False, "redacted": False})
    # Arguments a task cannot be called with again: the task's API page was a 500 on them.
    shapes = ('{"args": "abc", "kwargs": {}}', '{"args": [], "kwargs": [1]}', '{"args": {}, "kwargs": {}}')
    for junk in (None, 7, "not json", "[1, 2]", '{"args": []}', "x" * 100_000, *shapes):
        assert fact_from_event({**sent, "payload": junk}).payload in (
            None,
            payloads.storable("x" * 100_000, 65536),
        )
    assert payloads.read(payloads.storable("x" * 100_000, 65536)).truncated
    first = fact_from_event({**sent, "payload": good})
    retry = fact_from_event({**sent, "timestamp": 20.0, "payload": later})
    assert apply(apply(None, retry), first)["payload"] == apply(apply(None, first), retry)["payload"] == good


def test_attempts_come_out_the_same_in_any_order_and_stay_bounded():
    marks = [
        attempts.mark("received", 0.5, "w1", retries=0),
        attempts.mark("started", 1, "w1"),
        attempts.mark("retried", 2, "w1", "Boom('1')"),
        attempts.mark("received", 2.5, "w2", retries=1),
        attempts.mark("started", 3, "w2"),
        attempts.mark("retried", 4, "w2", "Boom('2')"),
        # The retry sent with no countdown: the next attempt starts before the worker reports this one.
        attempts.mark("received", 4.5, "w1", retries=2),
        attempts.mark("started", 5, "w1"),
        attempts.mark("received", 5.1, "w1", retries=3),
        attempts.mark("started", 5.2, "w1"),
        # ... and even succeed before it: its runtime says which attempt it ended.
        attempts.mark("succeeded", 5.25, "w1", runtime=0.04),
        attempts.mark("retried", 5.3, "w1", "Boom('3')"),
    ]
    folded = []
    for m in reversed(marks + marks[:2]):  # out of order, with duplicates
        folded = attempts.add(folded, m)
    found = attempts.attempts(folded)
    assert [(a["retries"], a["worker"], a["state"], a["exception"], a["runtime"]) for a in found] == [
        (0, "w1", "RETRY", "Boom('1')", 1.0),
        (1, "w2", "RETRY", "Boom('2')", 1.0),
        (2, "w1", "RETRY", "Boom('3')", 0.3),
        (3, "w1", "SUCCESS", "", 0.04),
    ]
    # A worker killed mid-run: the message is delivered again, with the same retry count.
    lost = [
        attempts.mark("received", 1, "w1", retries=0),
        attempts.mark("started", 2, "w1"),
        attempts.mark("received", 50, "w2", retries=0),
        attempts.mark("started", 51, "w2"),
        attempts.mark("succeeded", 52, "w2", runtime=1),
    ]
    assert [(a["worker"], a["state"]) for a in attempts.attempts(lost)] == [("w1", "LOST"), ("w2", "SUCCESS")]
    many: list = []
    for i in range(500):
        many = attempts.add(many, attempts.mark("started" if i % 2 == 0 else "retried", i, "w"))
    assert len(many) == attempts.MAX_MARKS and many[-1]["at"] == 499


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, check_id, says",
    [
        ("MAX_BYTES", "16k", "taskdeck.E026", "must be a whole number"),
        ("MAX_BYTES", 10, "taskdeck.E027", "at least 64"),
        ("REDACT_KEYS", "password", "taskdeck.E026", "must be a list"),
        ("REDACT_KEYS", ["pass(word"], "taskdeck.E027", "not a regular expression"),
        ("REDACT_KEYS", [3], "taskdeck.E027", "list of non-empty regular expressions"),
        ("REDACT_HOOK", "no.such.module.hook", "taskdeck.E027", "cannot be imported"),
        ("EXCLUDE_TASKS", "billing.*", "taskdeck.E026", "must be a list"),
        ("EXCLUDE_QUEUES", [None], "taskdeck.E027", "list of names or globs"),
    ],
)
def test_bad_payload_settings_are_a_check_error_naming_the_key(key, value, check_id, says):
    with payloads_settings(**{key: value}):
        found = [m for m in check_adoption() if m.id in ("taskdeck.E026", "taskdeck.E027")]
    assert len(found) == 1 and found[0].id == check_id, [str(m) for m in found]
    assert f"TASKDECK['PAYLOADS'][{key!r}]" in found[0].msg and says in found[0].msg


def test_one_record_per_run_gives_the_same_attempts():
    """The workers' records (taskdeck.results.record) make the marks task events make."""
    from taskdeck.monitor import merge, records
    from taskdeck.results.record import RUN

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def row(status: str, started: int, done: int, retries: int, result: Any = None) -> dict[str, Any]:
        return {
            "task_id": "x",
            "status": status,
            "task_name": "t",
            "worker": "w1",
            "date_started": start + dt.timedelta(seconds=started),
            "date_done": start + dt.timedelta(seconds=done),
            "meta": json.dumps({"_taskdeck": {"retries": retries, "queue": "default"}}),
            "result": json.dumps(result),
            RUN: {"sent": start.timestamp()},
        }

    rows = [
        row("STARTED", 1, 1, 0),
        row("RETRY", 1, 2, 0, "Boom"),
        row("STARTED", 3, 3, 1),
        row("SUCCESS", 3, 4, 1, 5),
    ]
    run = merge.fold(None, [f for r in reversed(rows) for f in records.facts(r)])
    found = attempts.attempts(run["attempts"])
    assert [(a["retries"], a["state"], a["runtime"]) for a in found] == [
        (0, "RETRY", 1.0),
        (1, "SUCCESS", 1.0),
    ]
    assert "Boom" in found[0]["exception"]
