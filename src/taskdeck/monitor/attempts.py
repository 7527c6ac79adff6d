"""Attempts: every execution of a task id, from the facts each one left.

Celery retries a task under the same id (``self.retry()``, ``autoretry_for``):
each attempt is a new message, received and started again, perhaps on another
worker, and ends retried, failed, succeeded or revoked. A run's row keeps the
final attempt's worker, result and exception; the earlier ones are kept here.

A run stores *marks*, one per fact that starts or ends an attempt
(``{"event": "started", "at": ts, "worker": host}``, ``{"event": "retried",
"at": ts, "worker": host, "exception": text}``...). :func:`add` folds a mark
in: duplicates are dropped and marks kept in time order, so arrival order
does not matter (the merge's rule, :mod:`taskdeck.monitor.merge`), and at most
:data:`MAX_MARKS` are kept (the newest). :func:`attempts` reads the attempts
out of them for the API and the dashboard.

Whatever the source of a run's facts (task events today, or one record per
run), it makes marks with :func:`mark` and folds them with :func:`add`.
"""

from __future__ import annotations

from typing import Any

#: Marks kept per run (three per attempt: received, started, ended): the newest ones.
MAX_MARKS = 96
#: Mark kind → the state an attempt that ends with it is in.
ENDS = {"retried": "RETRY", "failed": "FAILURE", "succeeded": "SUCCESS", "revoked": "REVOKED"}
#: Order of kinds at the same timestamp: received, then started, then an end.
ORDER = {"received": 0, "started": 1, "retried": 2, "failed": 2, "succeeded": 2, "revoked": 2}


def mark(
    event: str,
    at: float,
    worker: str = "",
    exception: str = "",
    runtime: float | None = None,
    retries: int | None = None,
) -> dict[str, Any]:
    """One mark: ``received`` (with the message's ``retries``), ``started``, or one of :data:`ENDS`."""
    if event not in ORDER:
        raise ValueError(f"not an attempt mark: {event!r}")
    out: dict[str, Any] = {"event": event, "at": round(float(at), 6), "worker": worker or ""}
    if exception:
        out["exception"] = exception
    if runtime is not None:
        out["runtime"] = round(float(runtime), 6)
    if retries is not None:
        out["retries"] = int(retries)
    return out


def _key(m: dict[str, Any]) -> tuple[float, int, str, str]:
    return (
        float(m.get("at") or 0.0),
        ORDER.get(m.get("event", ""), 2),
        m.get("event", ""),
        m.get("worker", ""),
    )


def add(marks: list[dict[str, Any]] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """``marks`` with ``new`` folded in (a new list; ``marks`` is not modified)."""
    marks = list(marks or [])
    key = _key(new)
    if any(_key(m) == key for m in marks):
        return marks
    if len(marks) >= MAX_MARKS and key < _key(marks[0]):
        return marks  # older than everything kept: the newest marks are what is kept
    marks.append(new)
    marks.sort(key=_key)
    return marks[-MAX_MARKS:]


def attempts(marks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The attempts the marks describe, in the order they started.

    Each: ``number`` (1 for the first kept), ``retries`` (the message's retry
    count, when its task-received was seen), ``worker``, ``started_at`` and
    ``finished_at`` (epoch seconds or None), ``state`` (STARTED while
    running; LOST when the same message was started again, redelivered, before
    this one ended; else how it ended), ``runtime`` (seconds: the worker's own
    for a success, else finished minus started) and ``exception``.

    On a prefork worker the next attempt (sent by the retry itself, with no
    countdown) can start, and even succeed, before the worker reports the one
    before it retried: neither "the latest start" nor time order alone pairs
    an end with its start. A success says how long it ran, so it belongs to
    the open attempt that started closest to its end minus its runtime;
    another end to the open attempt with the lowest retry count (the latest
    started of those: a redelivered message starts again with the same count).
    """
    out: list[dict[str, Any]] = []
    open_: list[dict[str, Any]] = []
    received: dict[str, int] = {}  # worker -> retries of the last message it received
    for m in sorted((m for m in marks or [] if isinstance(m, dict)), key=_key):
        event, at, worker = m.get("event"), m.get("at"), m.get("worker") or ""
        if event == "received":
            if isinstance(m.get("retries"), int):
                received[worker] = m["retries"]
            continue
        if event == "started":
            attempt = _attempt(len(out) + 1, worker, at, received.pop(worker, None))
            for other in open_:
                if other["retries"] is not None and other["retries"] == attempt["retries"]:
                    other["state"] = "LOST"  # its message was delivered again
            open_ = [o for o in open_ if o["state"] != "LOST"]
            out.append(attempt)
            open_.append(attempt)
            continue
        if event not in ENDS:
            continue
        if open_:
            attempt = min(open_, key=_closest(m))
            open_.remove(attempt)
        elif event == "revoked":
            continue  # revoked before it started: no attempt ran
        else:
            # Its start was never seen (or not kept): an attempt known by its end only.
            attempt = _attempt(len(out) + 1, worker, None, None)
            out.append(attempt)
        attempt["finished_at"] = at
        attempt["state"] = ENDS[str(event)]
        attempt["exception"] = m.get("exception") or ""
        attempt["worker"] = attempt["worker"] or worker
        runtime = m.get("runtime")
        if runtime is None and attempt["started_at"] is not None and at is not None:
            runtime = round(max(at - attempt["started_at"], 0.0), 6)
        attempt["runtime"] = runtime
    return out


def _closest(end: dict[str, Any]) -> Any:
    """Sort key of open attempts: the first is the one ``end`` ends."""
    runtime, at = end.get("runtime"), end.get("at")
    if isinstance(runtime, int | float) and isinstance(at, int | float):
        began = at - runtime
        return lambda o: (abs((o["started_at"] if o["started_at"] is not None else -1e18) - began), 0, 0.0)
    return lambda o: (0, -1 if o["retries"] is None else o["retries"], -(o["started_at"] or 0))


def _attempt(number: int, worker: str, started_at: float | None, retries: int | None) -> dict[str, Any]:
    return {
        "number": number,
        "retries": retries,
        "worker": worker,
        "started_at": started_at,
        "finished_at": None,
        "state": "STARTED",
        "runtime": None,
        "exception": "",
    }
