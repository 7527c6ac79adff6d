"""The state merge: one task's facts from events that arrive out of order, twice, or never.

Pure functions over plain dicts, so the rules are testable without a broker or
a database. A *row* is a dict of :class:`~taskdeck.models.TaskRun` fields with
timestamps as epoch floats (``*_ts``); :func:`apply` folds one
:class:`RunFact` into a row and returns the new row.

The rules make the result independent of arrival order and of duplicates:

* **State** is the state of the *winning* fact, the one with the largest key
  ``(final, from_events, taken, timestamp, rank)``: a final state (SUCCESS,
  FAILURE, REVOKED, REJECTED) beats any other, so it never moves back; a final
  state seen in an event beats one read from the results table; a worker's
  fact (``taken``: any state but SENT) beats the publisher's SENT whatever
  their clocks say, so a task-sent event stamped after the worker had
  already received and started the task (the publisher sends it after the
  message, and another host's clock may run ahead) does not put the run
  back to SENT; otherwise the latest fact wins (a retried task goes back to
  RECEIVED/STARTED), and the rank breaks timestamp ties.
* **Timestamps** per kind: ``sent``/``received``/``started`` keep the first
  (minimum) seen, ``finished`` is the winning final fact's; ``first_seen``
  is the minimum of all.
* **Identity** fields (name, args, queue, parents...) are the same in every
  event that carries them; the first non-empty value is kept (the smaller
  one if two disagree, so order still does not matter).
* **Attempt** fields (worker, result, exception, traceback, runtime) belong to
  the final attempt: once a final fact wins they are exactly its values.
* ``retries`` is the maximum seen.
* **Payload** (arguments captured at publish, :mod:`taskdeck.payloads`): the
  one of the earliest task-sent event that carried one, so a retry of the
  task (sent again under its id) does not replace what the caller sent.
* **Attempts** are marks folded by :func:`taskdeck.monitor.attempts.add`,
  which keeps them in time order without duplicates.

STUCK and LOST are not facts: the recorder's liveness tick
(:mod:`taskdeck.monitor.liveness`) sets them on a row, keeping its
``state_at``. Ranked just above the state they replace (STUCK above SENT,
and not ``taken`` either; LOST above STARTED), they survive a duplicate or older event of the same
attempt and give way to any later fact: the redelivered message's
RECEIVED/STARTED, or any final state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskdeck.monitor import attempts

FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED"})
RANK = {
    "SENT": 1,
    "STUCK": 2,
    "RECEIVED": 3,
    "STARTED": 4,
    "LOST": 5,
    "RETRY": 6,
    "REJECTED": 7,
    "REVOKED": 8,
    "FAILURE": 9,
    "SUCCESS": 10,
}
#: States the recorder's liveness tick sets on a row (:mod:`taskdeck.monitor.liveness`), never a fact.
FLAGGED = frozenset({"STUCK", "LOST"})
#: States of a message no worker has taken yet: any worker's fact beats them (see the module docstring).
WAITING = frozenset({"SENT", "STUCK"})
#: ``(final, from_events, taken, timestamp, rank)``: the larger wins.
Key = tuple[bool, bool, bool, float, int]
#: Event type → (state, timestamp column it fills).
EVENT_KINDS: dict[str, tuple[str, str | None]] = {
    "task-sent": ("SENT", "sent_ts"),
    "task-received": ("RECEIVED", "received_ts"),
    "task-started": ("STARTED", "started_ts"),
    "task-retried": ("RETRY", None),
    "task-succeeded": ("SUCCESS", None),
    "task-failed": ("FAILURE", None),
    "task-revoked": ("REVOKED", None),
    "task-rejected": ("REJECTED", None),
}
IDENTITY = ("name", "args", "kwargs", "queue", "routing_key", "parent_id", "root_id", "group_id")
#: Event type → the attempt mark it makes (:mod:`taskdeck.monitor.attempts`).
MARKS = {
    "task-received": "received",
    "task-started": "started",
    "task-retried": "retried",
    "task-failed": "failed",
    "task-succeeded": "succeeded",
    "task-revoked": "revoked",
}
ATTEMPT = ("worker", "result", "exception", "traceback", "runtime")


@dataclass(frozen=True)
class RunFact:
    """One thing known about a task: from an event, or from a result row."""

    task_id: str
    state: str
    timestamp: float
    #: "events" or "results" (django-celery-results, when events were missed).
    source: str = "events"
    #: The timestamp column this fact fills (``sent_ts``...), if any.
    column: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    attempt: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None
    priority: int | None = None
    #: The payload's JSON text (task-sent events of apps that capture it).
    payload: str | None = None
    #: The attempt mark this fact makes, if any.
    mark: dict[str, Any] | None = None

    def key(self) -> Key:
        state = self.state
        return (state in FINAL, self.source == "events", state not in WAITING, self.timestamp, RANK[state])


def clip(value: Any, limit: int) -> str:
    """``value`` (its repr if not text) as the database stores it, cut to ``limit`` characters."""
    if value is None:
        return ""
    out = storable(value if isinstance(value, str) else repr(value))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def storable(value: str) -> str:
    """``value`` with what PostgreSQL refuses in text (NUL, lone surrogates) escaped."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def fact_from_event(
    event: dict[str, Any], repr_limit: int = 1024, tb_limit: int = 16384, payload_limit: int = 65536
) -> RunFact | None:
    """The :class:`RunFact` of a Celery task event, or None for any other event."""
    kind = EVENT_KINDS.get(event.get("type", ""))
    task_id = event.get("uuid")
    if kind is None or not task_id:
        return None
    state, column = kind
    identity = {
        "name": event.get("name"),
        "args": clip(event.get("args"), repr_limit) if "args" in event else None,
        "kwargs": clip(event.get("kwargs"), repr_limit) if "kwargs" in event else None,
        "queue": event.get("queue"),
        "routing_key": event.get("routing_key"),
        # A retry is sent with the task itself as parent: not a parent at all.
        "parent_id": event.get("parent_id") if event.get("parent_id") != task_id else None,
        "root_id": event.get("root_id"),
        "group_id": event.get("group_id"),
    }
    attempt: dict[str, Any] = {}
    if state != "SENT":  # a sent event's hostname is the producer's
        attempt["worker"] = event.get("hostname") or ""
    if state == "SUCCESS":
        attempt.update(result=clip(event.get("result"), repr_limit), runtime=event.get("runtime"))
    if state in {"FAILURE", "RETRY", "REJECTED"}:  # a rejection says why (taskdeck.rejections)
        attempt.update(
            exception=clip(event.get("exception"), repr_limit),
            traceback=clip(event.get("traceback"), tb_limit),
        )
    retries = event.get("retries")
    payload = None
    if state == "SENT" and "payload" in event:
        from taskdeck.payloads import storable as storable_payload

        payload = storable_payload(event["payload"], payload_limit)
    mark = None
    if event["type"] in MARKS and (state != "REVOKED" or event.get("hostname")):
        # A revoke sent by a client, not a worker, ends no attempt.
        mark = attempts.mark(
            MARKS[event["type"]],
            round(float(event.get("timestamp") or 0.0), 6),
            attempt.get("worker", ""),
            attempt.get("exception", ""),
            event.get("runtime") if state == "SUCCESS" else None,
            retries if state == "RECEIVED" and isinstance(retries, int) else None,
        )
    return RunFact(
        task_id=str(task_id),
        state=state,
        # Microseconds, as the database keeps them, so a row read back compares equal.
        timestamp=round(float(event.get("timestamp") or 0.0), 6),
        column=column,
        identity={k: v for k, v in identity.items() if v},
        attempt=attempt,
        retries=int(retries) if isinstance(retries, int) else None,
        priority=event.get("priority") if isinstance(event.get("priority"), int) else None,
        payload=payload,
        mark=mark,
    )


def empty_row(task_id: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "state": None,
        "state_at": None,
        "reconstructed": False,
        "first_seen_ts": None,
        "sent_ts": None,
        "received_ts": None,
        "started_ts": None,
        "finished_ts": None,
        "retries": 0,
        "priority": None,
        "wait_time": None,
        **dict.fromkeys(IDENTITY, ""),
        **dict.fromkeys(ATTEMPT, ""),
        "runtime": None,
        "payload": "",
        "attempts": [],
    }


def winner_key(row: dict[str, Any]) -> Key | None:
    """The key of the fact that set ``row``'s state, rebuilt from the row itself."""
    if not row.get("state"):
        return None
    state, at = row["state"], float(row["state_at"])
    return (state in FINAL, not row["reconstructed"], state not in WAITING, at, RANK[state])


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def apply(row: dict[str, Any] | None, fact: RunFact) -> dict[str, Any]:
    """``row`` with ``fact`` folded in; ``row`` is not modified."""
    new = dict(row) if row is not None else empty_row(fact.task_id)
    if fact.payload is not None and (
        not new["payload"] or new["sent_ts"] is None or fact.timestamp < new["sent_ts"]
    ):
        new["payload"] = fact.payload
    if fact.mark is not None:
        new["attempts"] = attempts.add(new["attempts"], fact.mark)
    new["first_seen_ts"] = _min(new["first_seen_ts"], fact.timestamp)
    if fact.column:
        new[fact.column] = _min(new[fact.column], fact.timestamp)
    if fact.retries is not None:
        new["retries"] = max(new["retries"] or 0, fact.retries)
    if fact.priority is not None and new["priority"] is None:
        new["priority"] = fact.priority
    for name, value in fact.identity.items():
        current = new.get(name) or ""
        if not current or (value and value < current):
            new[name] = value

    winner = winner_key(new)
    wins = winner is None or fact.key() > winner
    if wins:
        new["state"] = fact.state
        new["state_at"] = fact.timestamp
        new["reconstructed"] = fact.source != "events"
    if fact.state in FINAL and wins:
        # The final attempt's facts, exactly: nothing an earlier attempt left.
        new["finished_ts"] = fact.timestamp
        for name in ATTEMPT:
            new[name] = fact.attempt.get(name, None if name == "runtime" else "")
        if not new["worker"] and row is not None:
            new["worker"] = row.get("worker") or ""
    elif new["state"] not in FINAL:
        for name, value in fact.attempt.items():
            if value in (None, ""):
                continue
            if wins or new.get(name) in (None, ""):
                new[name] = value
    _derive(new)
    return new


def _derive(row: dict[str, Any]) -> None:
    """Wait time and runtime, from the merged timestamps only."""
    start = row["started_ts"]
    queued = row["sent_ts"] if row["sent_ts"] is not None else row["received_ts"]
    row["wait_time"] = None
    if start is not None and queued is not None:
        row["wait_time"] = round(max(start - queued, 0.0), 6)
    if row["state"] in FINAL and row["runtime"] in (None, "") and start is not None and row["finished_ts"]:
        row["runtime"] = round(max(row["finished_ts"] - start, 0.0), 6)
    if row["runtime"] == "":
        row["runtime"] = None


def fold(row: dict[str, Any] | None, facts: list[RunFact]) -> dict[str, Any]:
    for fact in facts:
        row = apply(row, fact)
    assert row is not None
    return row
