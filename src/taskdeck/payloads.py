"""Payloads captured at publish: a task's exact arguments as JSON, redacted and size-capped.

Celery's events carry ``repr()`` text of a task's arguments cut at 1,024
characters (``argsrepr``), never the values: enough to read, not to send
again. Apps made by :func:`~taskdeck.create_celery_app` capture the values
themselves when a task is published (:class:`taskdeck.app.AMQP`) and carry
them to the recorder in the task-sent event, as its ``payload`` field: the
JSON text of ``{"args": [...], "kwargs": {...}, "truncated": bool,
"redacted": bool}``, encoded as kombu encodes the message body, so that a
retry from the dashboard sends the worker exactly what it got the first time.

Redaction (``TASKDECK["PAYLOADS"]``):

- a value whose key matches one of ``REDACT_KEYS`` (regular expressions,
  searched case-insensitively) is replaced by ``"[redacted]"``, at any
  depth of the keyword arguments and of dicts inside positional arguments;
  so is a positional argument whose parameter name matches, when the task is
  registered in the publishing process;
- a caller's own ``argsrepr``/``kwargsrepr`` (Celery's way to keep a secret
  out of events) drops the positional or keyword arguments from the capture;
- ``REDACT_HOOK``, a dotted path to ``hook(task_name, args, kwargs)``, runs
  last; returning ``(args, kwargs)`` replaces them, ``None`` keeps them.

The repr text Celery puts in the message headers and the events is redacted
the same way, so no view shows what the payload hides.

A payload whose JSON is larger than ``MAX_BYTES`` is cut (strings, lists and
dicts shortened) until it fits and marked ``truncated``. Neither a truncated
nor a redacted payload can be sent again. Capture never stops a publish: an
error in it (an argument kombu cannot encode, a failing hook) is counted in
:data:`ERRORS`, logged once a minute, and the task is sent without a payload.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from taskdeck import conf

logger = logging.getLogger("taskdeck")

#: What a redacted value is replaced with.
REDACTED = "[redacted]"
#: Nesting deeper than this is not walked: the part below is cut and the payload marked truncated.
MAX_DEPTH = 32
#: Characters of a string, items of a list or dict kept by the first cut of an oversized payload.
FIRST_CUT = 1024


@dataclass(frozen=True)
class Policy:
    """``TASKDECK["PAYLOADS"]`` as capture uses it (see :func:`policy`)."""

    enabled: bool = True
    max_bytes: int = 16384
    keys: re.Pattern[str] | None = None
    hook: Callable[..., Any] | None = None
    exclude_tasks: tuple[str, ...] = ()
    exclude_queues: tuple[str, ...] = ()
    #: Keys seen and whether they match: a task's keys repeat with each call.
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def secret(self, key: str) -> bool:
        """Whether a value under ``key`` (a dict key or a parameter name) is redacted."""
        hit = self._seen.get(key)
        if hit is None:
            hit = self.keys is not None and self.keys.search(key) is not None
            if len(key) <= 64 and len(self._seen) < 4096:
                self._seen[key] = hit
        return hit

    def applies(self, task: str, queue: str | None) -> bool:
        if not self.enabled:
            return False
        if any(fnmatch.fnmatchcase(task, pattern) for pattern in self.exclude_tasks):
            return False
        return not (queue and any(fnmatch.fnmatchcase(queue, p) for p in self.exclude_queues))


def key_pattern(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern searching for any of ``patterns``; None for none."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


@cache
def policy() -> Policy:
    """The effective policy, built once per settings (the cache is cleared with :func:`conf.get`'s)."""
    from django.utils.module_loading import import_string

    settings = conf.payloads()
    hook = settings["REDACT_HOOK"]
    return Policy(
        enabled=bool(settings["ENABLED"]),
        max_bytes=int(settings["MAX_BYTES"]),
        keys=key_pattern(list(settings["REDACT_KEYS"])),
        hook=import_string(hook) if isinstance(hook, str) else hook,
        exclude_tasks=tuple(settings["EXCLUDE_TASKS"]),
        exclude_queues=tuple(settings["EXCLUDE_QUEUES"]),
    )


# --- capture -----------------------------------------------------------------


class _TooDeep(Exception):
    pass


@dataclass
class Redacted:
    """A call's arguments after the redaction rules (``None``: not kept), and what happened to them."""

    args: Any
    kwargs: Any
    redacted: bool = False
    truncated: bool = False


@dataclass
class Captured(Redacted):
    """:class:`Redacted`, and the ``payload`` text the task-sent event carries."""

    text: str = ""


def redact(
    task: str,
    args: Any,
    kwargs: Any,
    policy: Policy,
    params: Sequence[str] = (),
    masked: tuple[bool, bool] = (False, False),
) -> Redacted:
    """``args`` and ``kwargs`` as the redaction rules leave them (copies only where they changed).

    ``params`` are the names of the task's positional parameters (for
    redaction by name); ``masked`` says whether the caller gave its own
    ``argsrepr`` and ``kwargsrepr``. Raises what the hook raises.
    """
    out = Redacted(list(args or ()), dict(kwargs or {}))
    try:
        if policy.keys is not None:
            out.args, changed_args = _redact_args(out.args, params, policy.secret)
            out.kwargs, changed_kwargs = _redact(out.kwargs, policy.secret, 0)
            out.redacted = changed_args or changed_kwargs
    except _TooDeep:
        # Not walked to the bottom, so not known to be free of secrets: nothing kept.
        out.args, out.kwargs, out.truncated = None, None, True
    if masked[0]:
        out.args, out.redacted = None, True
    if masked[1]:
        out.kwargs, out.redacted = None, True
    if policy.hook is not None and not out.truncated:
        replaced = policy.hook(task, out.args, out.kwargs)
        if replaced is not None:
            out.args, out.kwargs = replaced
            out.redacted = True
    return out


def encode(found: Redacted, policy: Policy) -> str:
    """The ``payload`` text of redacted arguments: kombu's JSON, cut to ``policy.max_bytes``."""
    text = _encoder().encode({"args": found.args, "kwargs": found.kwargs})
    truncated = found.truncated
    if len(text) > policy.max_bytes:  # ensure_ascii: characters are bytes
        text = _cut(json.loads(text), policy.max_bytes)
        truncated = True
    return _with_flags(text, truncated, found.redacted)


def capture(
    task: str,
    args: Any,
    kwargs: Any,
    policy: Policy,
    params: Sequence[str] = (),
    masked: tuple[bool, bool] = (False, False),
) -> Captured:
    """:func:`redact` then :func:`encode`: the payload of one call of ``task``; raises what they raise."""
    found = redact(task, args, kwargs, policy, params, masked)
    text = encode(found, policy)
    return Captured(
        found.args, found.kwargs, found.redacted, found.truncated or '"truncated": true' in text[-40:], text
    )


@cache
def _encoder() -> Any:
    """kombu's JSON encoder (the one the message body is made with), made once."""
    from kombu.utils.json import JSONEncoder

    return JSONEncoder()


def _with_flags(text: str, truncated: bool, redacted: bool) -> str:
    # The flags after the values: the text stays one dumps, not two.
    flags = (
        f', "truncated": {"true" if truncated else "false"}, "redacted": {"true" if redacted else "false"}}}'
    )
    return text[:-1] + flags


def _redact_args(
    args: list[Any], params: Sequence[str], secret: Callable[[str], bool]
) -> tuple[list[Any], bool]:
    out, changed = args, False
    for i, value in enumerate(args):
        if i < len(params) and secret(params[i]):
            new, hit = REDACTED, True
        else:
            new, hit = _redact(value, secret, 1)
        if hit:
            if not changed:
                out, changed = list(args), True
            out[i] = new
    return out, changed


def _redact(value: Any, secret: Callable[[str], bool], depth: int) -> tuple[Any, bool]:
    """``value`` with the values of matching keys replaced; a copy only where something changed."""
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise _TooDeep
        out, changed = value, False
        for key, item in value.items():
            if isinstance(key, str) and secret(key):
                new, hit = REDACTED, True
            else:
                new, hit = _redact(item, secret, depth + 1)
            if hit:
                if not changed:
                    out, changed = dict(value), True
                out[key] = new
        return out, changed
    if isinstance(value, list | tuple):
        if depth > MAX_DEPTH:
            raise _TooDeep
        items, changed = list(value), False
        for i, item in enumerate(value):
            new, hit = _redact(item, secret, depth + 1)
            if hit:
                items[i], changed = new, True
        return (items if changed else value), changed
    return value, False


def fitted(args: Any, kwargs: Any, limit: int) -> tuple[Any, Any, bool]:
    """``args`` and ``kwargs`` cut as a captured payload is when their JSON is over ``limit`` characters.

    Returns them, and whether they were cut.
    """
    text = json.dumps({"args": args, "kwargs": kwargs}, default=str)
    if len(text) <= limit:
        return args, kwargs, False
    cut = json.loads(_cut(json.loads(text), limit))
    return cut["args"], cut["kwargs"], True


def _cut(payload: Any, limit: int) -> str:
    """Shorter cuts of a decoded payload until its JSON fits ``limit``; no values if none does."""
    keep = FIRST_CUT
    while keep >= 8:
        args, kwargs = _shorten(payload.get("args"), keep), _shorten(payload.get("kwargs"), keep)
        text = json.dumps({"args": args, "kwargs": kwargs})
        if len(text) <= limit:
            return text
        keep //= 4
    return json.dumps({"args": None, "kwargs": None})


def _shorten(value: Any, keep: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= keep else value[:keep] + "…"
    if isinstance(value, list):
        if depth >= 8:
            return "…"
        return [_shorten(item, keep, depth + 1) for item in value[:keep]]
    if isinstance(value, dict):
        if depth >= 8:
            return "…"
        return {_shorten(k, keep): _shorten(v, keep, depth + 1) for k, v in list(value.items())[:keep]}
    return value


#: The message header taskdeck's publisher sets when the caller gave its own
#: ``argsrepr`` or ``kwargsrepr`` (Celery's way to keep a secret out of views):
#: ``["args"]``, ``["kwargs"]`` or both. A view of the message hides those values.
MASKED_HEADER = "taskdeck_masked"


def custom_repr(text: Any, value: Any, maxsize: int | None = None) -> bool:
    """Whether ``text`` is not simply Celery's repr of ``value`` (then it is a caller's mask).

    With ``maxsize``, Celery's own cut repr (what it writes when the caller gave
    none) is not taken for a mask either. A value whose repr fails counts as masked.
    """
    if text is None:
        return False
    try:
        forms = [value, list(value), tuple(value)] if isinstance(value, list | tuple) else [value]
        candidates = {repr(form) for form in forms}
        if maxsize is not None:
            candidates |= {redacted_repr(form, maxsize) for form in forms}
        return text not in candidates
    except Exception:  # noqa: BLE001 - a repr that fails: treat the text as a mask
        return True


def masked_by_header(headers: dict[str, Any]) -> tuple[bool, bool]:
    """What taskdeck's publisher said in :data:`MASKED_HEADER`: (positional masked, keyword masked)."""
    said = headers.get(MASKED_HEADER)
    parts = said if isinstance(said, list) else []
    return "args" in parts, "kwargs" in parts


def masked_parts(headers: dict[str, Any], args: Any, kwargs: Any, maxsize: int = 1024) -> tuple[bool, bool]:
    """Whether a message's positional and keyword arguments were masked by their caller.

    taskdeck's publisher says so in :data:`MASKED_HEADER`; for a message of
    another publisher, an ``argsrepr`` or ``kwargsrepr`` header that is not
    Celery's repr of the decoded values counts as a mask (JSON may have changed
    a value's type: then the values are hidden, never shown by mistake).
    """
    from taskdeck.results import SENT_HEADER

    if SENT_HEADER in headers:
        return masked_by_header(headers)
    return (
        custom_repr(headers.get("argsrepr"), args, maxsize),
        custom_repr(headers.get("kwargsrepr"), kwargs, maxsize),
    )


def redacted_repr(value: Any, maxsize: int) -> str:
    """Celery's repr of ``value`` (as ``argsrepr`` is made), for headers and events of a redacted call."""
    from celery.utils.saferepr import saferepr

    return saferepr(value, maxsize)


# --- reading -----------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """A run's captured payload as the API and the dashboard show it."""

    captured: bool
    args: Any = None
    kwargs: Any = None
    truncated: bool = False
    redacted: bool = False

    @property
    def sendable(self) -> bool:
        return self.captured and not self.truncated and not self.redacted

    def as_dict(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "args": self.args,
            "kwargs": self.kwargs,
            "truncated": self.truncated,
            "redacted": self.redacted,
        }


NOT_CAPTURED = Payload(captured=False)


def refusal(task: str, payload: Payload) -> str | None:
    """Why ``payload`` cannot be sent again as ``task``'s arguments, or None when it can."""
    if not payload.captured:
        return (
            f"{task}: its arguments were not captured at publish (capture off for this task or "
            "queue in TASKDECK['PAYLOADS'], an error while capturing, sent by an app not made by "
            "create_celery_app, or recorded from the results table), so it cannot be sent again "
            "with the same ones"
        )
    if payload.truncated:
        return (
            f"{task}: its captured arguments were cut to fit TASKDECK['PAYLOADS']['MAX_BYTES'], "
            "so sending them again would change them"
        )
    if payload.redacted:
        return (
            f"{task}: its captured arguments were redacted (a key matching "
            "TASKDECK['PAYLOADS']['REDACT_KEYS'], the REDACT_HOOK, or the caller's own argsrepr), "
            f"so sending them again would send {REDACTED!r} in place of a secret"
        )
    if payload.args is None or payload.kwargs is None:
        return f"{task}: its captured arguments are incomplete, so it cannot be sent again with the same ones"
    return None


def read(text: str) -> Payload:
    """The :class:`Payload` stored as ``text`` (a run's ``payload``); not captured if empty or unreadable.

    Values come back as kombu decodes them (a datetime sent as one is one
    again), which is what a retry sends.
    """
    if not text:
        return NOT_CAPTURED
    from kombu.utils.json import loads

    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return NOT_CAPTURED
    if not isinstance(data, dict):
        return NOT_CAPTURED
    args, kwargs = data.get("args"), data.get("kwargs")
    return Payload(
        captured=True,
        args=args if isinstance(args, list) else None,
        kwargs=kwargs if isinstance(kwargs, dict) else None,
        truncated=data.get("truncated") is True,
        redacted=data.get("redacted") is True,
    )


def shown(text: str) -> Payload:
    """The payload as JSON values (no kombu types decoded), for the API and the page."""
    if not text:
        return NOT_CAPTURED
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return NOT_CAPTURED
    if not isinstance(data, dict):
        return NOT_CAPTURED
    return Payload(
        captured=True,
        args=data.get("args"),
        kwargs=data.get("kwargs"),
        truncated=data.get("truncated") is True,
        redacted=data.get("redacted") is True,
    )


def storable(value: Any, limit: int) -> str | None:
    """A ``payload`` event field as the recorder stores it, or None when it is not one.

    Anything may arrive in an event: only a JSON object with ``args`` and
    ``kwargs`` is kept, re-encoded with ASCII escapes (PostgreSQL's text
    refuses NUL); one over ``limit`` characters is kept as truncated, values dropped.
    """
    if not isinstance(value, str) or not value:
        return None
    if len(value) > limit:
        return json.dumps({"args": None, "kwargs": None, "truncated": True, "redacted": False})
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or "args" not in data or "kwargs" not in data:
        return None
    if not isinstance(data["args"], list | None) or not isinstance(data["kwargs"], dict | None):
        return None  # not arguments a task could be called with again (the API's schema says so too)
    try:
        text = json.dumps(data)
    except (ValueError, RecursionError):
        return None
    if len(text) > limit:
        return json.dumps({"args": None, "kwargs": None, "truncated": True, "redacted": False})
    return text


# --- errors --------------------------------------------------------------------


class Errors:
    """Capture errors in this process: counted, logged once a minute (thread-safe)."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.count = 0
        self._lock = threading.Lock()
        self._next_log = 0.0
        self._unlogged = 0

    def add(self, task: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now < self._next_log:
                self._unlogged += 1
                return
            self._next_log, more, self._unlogged = now + self.every, self._unlogged, 0
        logger.warning(
            "payload of %s not captured (%s: %s); the task is sent without it and cannot be retried "
            "from the dashboard%s",
            task,
            type(exc).__name__,
            str(exc)[:200],
            f"; {more} more capture errors since the last such line" if more else "",
        )


#: This process's capture errors.
ERRORS = Errors()
