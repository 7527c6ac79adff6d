"""The dead-letter store: what taskdeck refused to process, kept in its raw form.

A task message a worker could not turn into a task call, an event the
recorder could not read, a row or a result the database refused: each is
acknowledged (so it cannot stop the process that met it) and handed to
:func:`store`, which keeps it as a :class:`~taskdeck.models.DeadLetter` row in
the project's database, with its raw headers and body, the reason, and the
process that refused it. The API and the dashboard list, requeue and delete
them.

A table rather than a broker list: it survives broker restarts and a flushed
Redis, it is one store for every broker (and for events and rows, which have
no queue), and the API and dashboard query it like the runs.

The database may be down when something must be dead-lettered, and the
thing has already been acknowledged: it must not be lost. :func:`store` then
appends it as one JSON line to a spool file, ``DATA_DIR/deadletters.jsonl``
(written with ``O_APPEND`` and ``fsync``), and the next :func:`store` that
reaches the database, or :func:`drain_spool` (called when a worker starts),
moves the spooled lines into the table. If the spool cannot be written
either, the whole dead letter is logged at CRITICAL, body included
(base64): the log is then its only copy.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskdeck import conf

logger = logging.getLogger("taskdeck")

KINDS = ("message", "event", "row", "result")
SPOOL_NAME = "deadletters.jsonl"
_FIELD = 255
_REASON = 4000
_DEPTH = 20


def store(
    kind: str,
    reason: str,
    *,
    source: str,
    headers: dict | None = None,
    body: bytes | str | None = None,
    task_id: str | None = None,
    task: str | None = None,
    properties: dict | None = None,
) -> None:
    """Keep one refused thing in the dead-letter store. Never raises.

    ``kind`` is one of :data:`KINDS`; ``reason`` says what was wrong and
    where; ``source`` names the process (a worker's hostname, ``"recorder"``).
    ``headers`` and ``properties`` (for a message: content type and
    encoding, exchange, routing key, the broker's properties) are kept as
    JSON, values JSON cannot hold as their ``repr``; ``body`` as bytes (a
    ``str`` is encoded as UTF-8), cut to ``TASKDECK["DEAD_LETTER_BODY_BYTES"]``.
    """
    try:
        letter = _letter(kind, reason, source, headers, body, task_id, task, properties)
    except Exception:  # never raise: keep what can be kept
        logger.exception("dead letter from %s could not be prepared in full; keeping its reason only", source)
        letter = _letter(
            "message" if kind not in KINDS else kind, str(reason), str(source), None, None, None, None, None
        )
    try:
        _insert([letter])
    except Exception as exc:  # the database is down or refuses it: spool it
        _close_unusable()
        _spool(letter, exc)
        return
    try:
        drain_spool()
    except Exception:  # the letter is stored; draining is retried by the next one
        logger.exception("could not move spooled dead letters into the database")


def drain_spool() -> int:
    """Move the dead letters spooled while the database was down into the table; returns how many.

    One process drains at a time (an exclusive lock on the spool); writers
    wait for it. A failure leaves the spool as it was.
    """
    path = spool_path()
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with _locked(path, exclusive=True, blocking=False) as locked:
        if not locked:
            return 0
        lines = path.read_bytes().splitlines()
        letters = []
        for number, line in enumerate(lines, 1):
            try:
                letters.append(_from_spool(json.loads(line)))
            except Exception:  # a torn line (a crash mid-write): keep it, as text
                letters.append(
                    _letter(
                        "message",
                        f"unreadable line {number} of the dead-letter spool",
                        "spool",
                        None,
                        line,
                        None,
                        None,
                        None,
                    )
                )
        if letters:
            _insert(letters)
        with open(path, "r+b") as spool:
            spool.truncate(0)
            os.fsync(spool.fileno())
    if letters:
        logger.warning("moved %d dead letters from %s into the database", len(letters), path)
    return len(letters)


def spool_path() -> Path:
    """Where dead letters wait while the database is down."""
    return Path(conf.get()["DATA_DIR"]) / SPOOL_NAME


def _letter(
    kind: str,
    reason: str,
    source: str,
    headers: Any,
    body: bytes | str | None,
    task_id: Any,
    task: Any,
    properties: Any,
) -> dict[str, Any]:
    from django.utils import timezone

    if kind not in KINDS:
        reason = f"{reason} (stored under kind 'message': {kind!r} is not one of {', '.join(KINDS)})"
        kind = "message"
    limit = int(conf.get()["DEAD_LETTER_BODY_BYTES"])
    raw = _encoded(body) if isinstance(body, str) else body
    if raw is not None and not isinstance(raw, bytes):
        raw = bytes(raw) if isinstance(raw, bytearray | memoryview) else _text(repr(raw)).encode()
    size = len(raw) if raw is not None else 0
    return {
        "created_at": timezone.now(),
        "kind": kind,
        "reason": _text(str(reason))[:_REASON],
        "source": _text(str(source))[:_FIELD],
        "task_id": _text(str(task_id or ""))[:_FIELD],
        "task": _text(str(task or ""))[:_FIELD],
        "headers": _capped(headers, limit),
        "properties": _capped(properties, limit),
        "body": raw[:limit] if raw is not None else None,
        "body_size": size,
        "truncated": size > limit,
    }


def _insert(letters: list[dict[str, Any]]) -> None:
    from django.db import transaction

    from taskdeck.models import DeadLetter

    with transaction.atomic():
        DeadLetter.objects.bulk_create([DeadLetter(**letter) for letter in letters])


def _close_unusable() -> None:
    from django.db import connection

    with contextlib.suppress(Exception):  # inside a caller's transaction it cannot be closed
        connection.close_if_unusable_or_obsolete()


def _spool(letter: dict[str, Any], exc: Exception) -> None:
    line = json.dumps(_to_spool(letter)).encode() + b"\n"
    path = spool_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path, exclusive=False, blocking=True):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
    except Exception:
        logger.critical(
            "dead letter could not be stored (database: %s: %s) nor spooled to %s; its only copy: %s",
            type(exc).__name__,
            exc,
            path,
            line.decode(),
            exc_info=True,
        )
        return
    logger.error(
        "dead letter spooled to %s, the database did not take it (%s: %s); moved in when it answers",
        path,
        type(exc).__name__,
        str(exc).strip()[:200],
    )


@contextlib.contextmanager
def _locked(path: Path, *, exclusive: bool, blocking: bool) -> Iterator[bool]:
    """A lock beside the spool: writers share it, the drainer holds it alone."""
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _to_spool(letter: dict[str, Any]) -> dict[str, Any]:
    line = dict(letter)
    line["created_at"] = letter["created_at"].isoformat()
    line["body"] = None if letter["body"] is None else base64.b64encode(letter["body"]).decode()
    return line


def _from_spool(line: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    letter = dict(line)
    letter["created_at"] = dt.datetime.fromisoformat(line["created_at"])
    letter["body"] = None if line.get("body") is None else base64.b64decode(line["body"])
    return letter


def _encoded(text: str) -> bytes:
    """``text`` as UTF-8: bytes decoded with ``surrogateescape`` come back, lone surrogates stay."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _capped(value: Any, limit: int) -> dict[str, Any]:
    """``value`` as a JSON object the database takes, or its cut text when larger than ``limit``."""
    if value is None:
        return {}
    safe = _jsonable(value)
    if not isinstance(safe, dict):
        safe = {"(not a mapping)": safe}
    text = json.dumps(safe)
    if len(text) > limit:
        return {"(cut)": text[:limit]}
    return safe


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` with everything JSON (and PostgreSQL's jsonb) cannot hold replaced by text."""
    if depth > _DEPTH:
        return _text(repr(value)[:1000])
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bytes | bytearray):
        return _text(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, dict):
        return {_text(str(key)): _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item, depth + 1) for item in value]
    return _text(repr(value))


def _text(value: str) -> str:
    """Text PostgreSQL stores: no NUL, no lone surrogates (both shown escaped)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
