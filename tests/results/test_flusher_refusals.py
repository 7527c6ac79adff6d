"""The write-behind flusher: a row the database refuses is dead-lettered, never a wall.

Before, the flusher retried a batch forever on any error: one result row
PostgreSQL refuses (a worker name over django-celery-results' 100
characters) blocked every result pushed after it. Now the batch is split
until the refused row stands alone; that row goes to the dead-letter store
(kind ``"result"``) and the others are written. A database that is down is
not a refusal: that batch stays in Redis and is written when it is back
(tests/faults/test_database_outage.py).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis
from django_celery_results.models import TaskResult

from taskdeck import conf
from taskdeck.models import DeadLetter
from taskdeck.results.flusher import Flusher
from taskdeck.results.writebehind import encode_row

pytestmark = pytest.mark.django_db(transaction=True)


def row(task_id: str, worker: str = "w@h") -> dict:
    now = dt.datetime.now(dt.UTC)
    return {
        "task_id": task_id,
        "status": "SUCCESS",
        "result": json.dumps(task_id),
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "task_name": "tests.ok",
        "worker": worker,
        "date_done": now,
        "date_created": now,
    }


def test_a_150_character_worker_name_blocks_no_later_result(broker):
    client = redis.Redis.from_url(broker)
    flusher = Flusher(client, {**conf.results(), "BATCH_SIZE": 64})
    rows = [row(f"t-{i}", "w" * 150 if i == 37 else "w@h") for i in range(50)]
    client.rpush(flusher.pending_key, *[encode_row(r) for r in rows])
    client.rpush(flusher.pending_key, b"not json", encode_row({"status": "SUCCESS"}))

    assert flusher.drain() == 52
    assert client.llen(flusher.pending_key) == 0
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {f"t-{i}" for i in range(50)} - {
        "t-37"
    }
    letters = {d.task_id: d for d in DeadLetter.objects.filter(kind="result")}
    assert set(letters) == {"t-37", ""}  # the refused row, and the two rows that do not decode
    refused = letters["t-37"]
    assert "DataError" in refused.reason and json.loads(bytes(refused.body))["worker"] == "w" * 150
    assert DeadLetter.objects.filter(kind="result", reason__contains="does not decode").count() == 2

    # Results pushed later are written as usual.
    client.rpush(flusher.pending_key, encode_row(row("t-later")))
    assert flusher.drain() == 1
    assert TaskResult.objects.filter(task_id="t-later").exists()
