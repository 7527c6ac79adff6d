"""Generated bad task messages, interleaved with good ones, against one real worker per broker.

Each example publishes a few messages raw with kombu to the worker's queue,
in a generated order: good calls of ``tests.support.probe.record`` and bad
messages, each made bad by one generated mutation of a good one (a body of
another shape or type, raw bytes, a text encoding that is not the one
declared, a content type the worker does not accept, a compression that was
not applied, a header of the wrong type, a body over the worker's size
limit). Then: every good task ran; every bad message is ``REJECTED`` (a
result row, under a new id when it had none usable) and dead-lettered (found
by a marker header); none ran; the worker's main process is the one it
started with. After the last example nothing is left queued or
unacknowledged. One worker serves every example of a broker.
"""

from __future__ import annotations

import json
import string
import uuid
from typing import Any

import pytest
from dateutil.parser import isoparse
from django_celery_results.models import TaskResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskdeck.models import DeadLetter
from tests.guard.test_poison_messages import nothing_left
from tests.support.messages import call_body, publish, task_headers
from tests.support.services import wait_for
from tests.support.small_message_settings import WORKER_LIMIT

#: Header integers as a producer can send them: AMQP tables carry signed 64-bit integers at most
#: (py-amqp cannot encode 2**63, so no worker could ever receive it).
INT64 = st.integers(-(2**63), 2**63 - 1)

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = 50


@pytest.fixture
def worker_env() -> dict[str, str]:
    return {"DJANGO_SETTINGS_MODULE": "tests.support.small_message_settings"}


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
not_text = (
    st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.lists(st.integers(0, 9), max_size=3)
    | st.dictionaries(st.text(string.ascii_letters, max_size=4), st.integers(0, 9), max_size=2)
)
tags = st.text(max_size=40)


def is_call(value: Any) -> bool:
    """Would Celery take ``value`` as a task call's body (protocol 2, or 1 inside 2)?"""
    if isinstance(value, dict):
        return "args" in value
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], list)
        and isinstance(value[1], dict)
        and (value[2] is None or isinstance(value[2], dict))
    )


def not_iso(text: str) -> bool:
    try:
        isoparse(text)
    except Exception:
        return True
    return False


def one_of_keys(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``{key: value}`` for one of ``keys``."""
    return st.sampled_from(keys).flatmap(lambda key: values.map(lambda value: {key: value}))


def bad_headers() -> st.SearchStrategy[dict[str, Any]]:
    too_long = st.text(string.ascii_letters, min_size=256, max_size=300)
    return st.one_of(
        st.fixed_dictionaries({"id": not_text | st.just("") | too_long}),
        st.fixed_dictionaries({"task": not_text | st.just("") | too_long}),
        st.fixed_dictionaries(
            {"timelimit": st.lists(st.integers(0, 9), min_size=3, max_size=4) | st.text(max_size=5) | INT64}
        ),
        one_of_keys(
            ["eta", "expires"],
            not_text.filter(lambda v: v is not None)
            | st.text(string.ascii_letters + " ", min_size=1, max_size=12).filter(not_iso),
        ),
        st.fixed_dictionaries({"retries": st.text(max_size=4) | st.integers(-(2**63), -1) | st.floats()}),
        one_of_keys(["argsrepr", "kwargsrepr", "shadow", "root_id", "parent_id", "group"], not_text),
        st.fixed_dictionaries({"ignore_result": INT64 | st.text(max_size=4)}),
    )


@st.composite
def bad_message(draw: Any) -> dict[str, Any]:
    """publish() keyword arguments of one message that cannot become a task call."""
    good = {"body": call_body(draw(tags)), "headers": task_headers(), "content_encoding": "utf-8"}
    kind = draw(
        st.sampled_from(
            ["shape", "embed", "bytes", "encoding", "content_type", "compression", "header", "size"]
        )
    )
    if kind == "shape":
        value = draw(json_values.filter(lambda v: not is_call(v)))
        good["body"] = json.dumps(value).encode()
    elif kind == "embed":
        key = draw(st.sampled_from(["callbacks", "errbacks", "chain", "chord"]))
        bad = draw(not_text.filter(lambda v: v is not None and not (key == "chord" and isinstance(v, dict))))
        if key != "chord" and isinstance(bad, list) and all(isinstance(x, dict) for x in bad):
            bad = "x"
        good["body"] = json.dumps([[draw(tags)], {}, {key: bad}]).encode()
    elif kind == "bytes":
        raw = draw(st.binary(max_size=120))
        try:
            decoded = json.loads(raw)
        except Exception:
            decoded = None
        good["body"] = raw if not is_call(decoded) else b"\xff" + raw
    elif kind == "encoding":
        text = draw(st.text(st.characters(min_codepoint=0x80, max_codepoint=0xFF), min_size=1, max_size=8))
        raw = json.dumps([[text], {}, None], ensure_ascii=False).encode("latin-1")
        try:
            raw.decode("utf-8")
            raw = raw + b"\xff"  # latin-1 that happened to be valid UTF-8: make it not
        except UnicodeDecodeError:
            pass
        good["body"] = raw
    elif kind == "content_type":
        good["content_type"] = draw(
            st.sampled_from(["application/x-yaml", "application/x-python-serialize", "text/plain", ""])
            | st.text(string.ascii_lowercase + "/-+.", min_size=1, max_size=30)
        ).replace("application/json", "application/jsonx")
    elif kind == "compression":
        good["headers"]["compression"] = draw(
            st.sampled_from(["application/x-gzip", "application/x-bz2", "nope"])
        )
    elif kind == "header":
        good["headers"].update(draw(bad_headers()))
    else:  # over TASKDECK["WORKER_MAX_MESSAGE_BYTES"] of the worker's settings
        good["body"] = call_body("x" * (WORKER_LIMIT + draw(st.integers(0, 2000))))
    good["kind"] = kind
    return good


messages = st.lists(
    st.one_of(tags.map(lambda tag: {"good": tag}), bad_message()),
    min_size=1,
    max_size=4,
)


def test_no_generated_message_stops_the_worker_or_loses_a_good_task(bus, probe):
    pid = bus.worker.pid
    seen = {"good": 0, "bad": 0}
    goods_sent: list[str] = []
    kinds: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(batch=messages)
    def one_example(batch: list[dict[str, Any]]) -> None:
        goods, bads = [], []
        for message in batch:
            if "good" in message:
                task_id = str(uuid.uuid4())
                publish(bus.app, call_body(message["good"]), headers=task_headers(task_id))
                goods.append(task_id)
                continue
            marker = str(uuid.uuid4())
            kwargs = {key: value for key, value in message.items() if key != "kind"}
            kwargs["headers"] = {**kwargs["headers"], "fuzz": marker}
            publish(bus.app, **kwargs)
            bads.append((marker, message))
            kinds.add(message["kind"])
        for task_id in goods:
            wait_for(lambda t=task_id: probe.started(t), 60, f"good task {task_id}")
        for marker, message in bads:
            letter = wait_for(
                lambda m=marker: DeadLetter.objects.filter(headers__fuzz=m).first(),
                60,
                f"the dead letter of a bad message ({message['kind']}: {message})",
            )
            row = wait_for(
                lambda i=letter.task_id: TaskResult.objects.filter(task_id=i).first(), 30, "its row"
            )
            assert row.status == "REJECTED", (message, row.result)
            assert probe.started(letter.task_id) is None, "a refused message ran"
        assert bus.worker.alive() and bus.worker.pid == pid, (
            f"the worker's main process changed, see {bus.worker.log}"
        )
        goods_sent.extend(goods)
        seen["good"] += len(goods)
        seen["bad"] += len(bads)

    one_example()
    nothing_left(bus, goods_sent)
    print(f"{bus.name}: {seen['good']} good, {seen['bad']} bad messages; mutations {sorted(kinds)}")
    assert seen["good"] and seen["bad"]
