"""The dead-letter store keeps what it is given, raw, and loses nothing while the database is down."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskdeck import deadletter
from taskdeck.models import DeadLetter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def data_dir(tmp_path):
    with override_settings(
        TASKDECK={**django_settings.TASKDECK, "DATA_DIR": tmp_path, "DEAD_LETTER_BODY_BYTES": 256}
    ):
        yield tmp_path


def test_a_message_is_kept_raw_with_what_json_cannot_hold_shown_as_text(data_dir):
    deadletter.store(
        "message",
        "body is not a task call",
        source="celery@host",
        headers={
            "task": "t\x00ask",
            "id": "abc",
            "when": dt.datetime(2026, 1, 1),
            "blob": b"\xff\x00",
            "big": 2**70,
        },
        body=b"\x00\xff not json",
        task_id="abc",
        task="orders.tasks.charge",
        properties={"content_type": "application/json", "lone": "\ud800", "nan": float("nan")},
    )
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.source, letter.task_id, letter.task) == (
        "message",
        "celery@host",
        "abc",
        "orders.tasks.charge",
    )
    assert bytes(letter.body) == b"\x00\xff not json" and letter.body_size == 11 and not letter.truncated
    assert letter.headers["task"] == "t\\x00ask"
    assert letter.headers["when"] == "datetime.datetime(2026, 1, 1, 0, 0)"
    assert letter.headers["blob"] == "\\xff\\x00" and letter.headers["big"] == str(2**70)
    assert letter.properties == {"content_type": "application/json", "lone": "\\ud800", "nan": "nan"}


def test_a_long_body_is_cut_and_marked_and_odd_arguments_are_kept(data_dir):
    deadletter.store("event", "junk", source="recorder", body="é" * 200, task_id="x" * 300, task=None)
    deadletter.store("bogus", "what kind?", source="s", headers={"h": "v" * 300})  # type: ignore[arg-type]
    event, bogus = DeadLetter.objects.order_by("id")
    assert (event.kind, event.body_size, event.truncated, len(bytes(event.body))) == ("event", 400, True, 256)
    assert len(event.task_id) == 255
    assert bogus.kind == "message" and "'bogus' is not one of message, event, row, result" in bogus.reason
    assert list(bogus.headers) == ["(cut)"]
    assert DeadLetter.objects.search(kind="event").get() == event


def test_a_refusing_database_spools_and_the_next_store_moves_it_in(data_dir):
    from django.db import transaction

    with transaction.atomic():  # a transaction the database has given up on refuses every statement
        with pytest.raises(Exception, match="division by zero"), connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
        deadletter.store("row", "refused row", source="recorder", body=b"{}")
    spooled = (data_dir / "deadletters.jsonl").read_text().splitlines()
    assert len(spooled) == 1 and json.loads(spooled[0])["reason"] == "refused row"
    assert DeadLetter.objects.count() == 0

    deadletter.store("message", "next one", source="w")
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == ["next one", "refused row"]
    assert bytes(DeadLetter.objects.get(reason="refused row").body) == b"{}"
    assert (data_dir / "deadletters.jsonl").read_text() == ""


def test_a_database_that_does_not_answer_spools_and_drain_moves_it_in(data_dir):
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = 1  # nothing listens there
    try:
        deadletter.store("message", "while down", source="w", body=b"payload", headers={"id": "i"})
    finally:
        connection.settings_dict["PORT"] = port
        connection.close()
    assert DeadLetter.objects.count() == 0
    assert deadletter.drain_spool() == 1
    letter = DeadLetter.objects.get()
    assert (letter.reason, bytes(letter.body), letter.headers) == ("while down", b"payload", {"id": "i"})
    assert deadletter.drain_spool() == 0


#: Text PostgreSQL cannot store as it is: NUL, lone surrogates.
odd_text = st.lists(st.sampled_from(["\x00", "\ud800", "\udcff", "a", "é"]), max_size=4).map("".join)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | odd_text
    | st.binary(max_size=20)
    | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(st.text(max_size=8), anything, max_size=4) | st.none(),
    body=st.binary(max_size=300) | st.text(max_size=100) | odd_text | st.none(),
    task_id=st.text(max_size=300) | odd_text | st.none(),
)
def test_whatever_it_is_given_store_keeps_one_row_and_the_body_byte_for_byte(
    data_dir, headers, body, task_id
):
    before = DeadLetter.objects.count()
    deadletter.store("message", "fuzz", source="w", headers=headers, body=body, task_id=task_id, task=task_id)
    assert DeadLetter.objects.count() == before + 1, "stored in the table, not spooled"
    letter = DeadLetter.objects.latest("id")
    raw = deadletter._encoded(body) if isinstance(body, str) else body
    if raw is None:
        assert letter.body is None
    else:
        assert letter.body_size == len(raw) and bytes(letter.body) == raw[:256]
    assert not (data_dir / "deadletters.jsonl").exists()


def test_a_web_process_that_never_imported_the_task_modules_can_requeue():
    """Celery discovers task modules when a worker starts: a web process had none, refused every requeue."""
    import subprocess
    import sys

    from tests.support.services import ROOT

    script = """
import django, json
django.setup()
from celery import current_app
from taskdeck.guard import requeue_problem
from taskdeck.models import DeadLetter
from tests.support.messages import call_body, task_headers
name = "orders.tasks.confirm_order"
before = name in current_app.tasks
letter = DeadLetter(kind="message", body=call_body({"order_id": 1}), headers=task_headers(name=name),
                    properties={"routing_key": "default", "content_type": "application/json",
                                "content_encoding": "utf-8"})
print(json.dumps([before, requeue_problem(current_app, letter)]))
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "core.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, problem = json.loads(done.stdout.strip().splitlines()[-1])
    assert before is False, "the task was imported already: this test proves nothing"
    assert problem is None


def test_retention_keeps_the_newest_dead_letters_within_their_age_and_size(data_dir):
    """A flood of junk cannot fill the disk: the oldest go first, by age and beyond the size cap."""
    from django.utils import timezone

    from taskdeck.monitor.retention import Retention
    from taskdeck.querysets import DEAD_LETTER_ROW_BYTES

    for i in range(40):
        deadletter.store("message", f"junk {i}", source="flood", body=b"x" * 200, task_id=f"j{i}")
    old = DeadLetter.objects.order_by("id")[:5]
    DeadLetter.objects.filter(id__in=[d.id for d in old]).update(
        created_at=timezone.now() - dt.timedelta(days=31)
    )
    per_row = 200 + DEAD_LETTER_ROW_BYTES  # the body is cut to DEAD_LETTER_BODY_BYTES (256): 200 kept
    retention = Retention(
        runs=None, rollups=None, deadletters=30 * 86400, deadletter_bytes=10 * per_row, batch=3
    )
    done = retention.prune()
    assert done["deadletters"] == 5 and done["deadletters_over_size"] == 25
    assert sorted(DeadLetter.objects.values_list("task_id", flat=True)) == sorted(
        f"j{i}" for i in range(30, 40)
    )
    assert Retention(runs=None, rollups=None, deadletter_bytes=10 * per_row).prune() == {
        "deadletters_over_size": 0
    }
