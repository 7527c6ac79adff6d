"""A run's arguments read back from what was recorded, for a retry with the same arguments.

Celery's task-sent and task-received events carry ``repr()`` text of the
arguments (``argsrepr``), never the values, cut at 1024 characters (the
``argsrepr_maxsize`` of ``celery.app.amqp``). As the project accepts JSON
only, every argument is a str, number, bool, None, list or dict, and their
repr is a Python literal: :func:`ast.literal_eval` gives the values back.

A retry must not change the arguments, so anything that may have been cut is
refused rather than guessed: a repr that reached Celery's limit (a cut string
still parses, ending in ``...``), one the recorder clipped (``…``), and
containers Celery abbreviated past ``task_repr_maxlevels`` (``[...]``).

A caller may also pass its own ``argsrepr``/``kwargsrepr`` to keep secrets
out of events and results (``kwargsrepr="{'api_key': '***'}"``): that text
parses too, and sending it would replace the secret with the mask. Nothing
recorded says a repr was replaced, so values that look like a mask (``***``,
``<redacted>``, ``[FILTERED]``…) are refused; a mask that looks like a real
value cannot be told apart (the cure is capturing the payload at publish).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from taskdeck.errors import ActionRefused

#: Celery's ``AMQP.argsrepr_maxsize`` and ``kwargsrepr_maxsize``.
REPR_MAXSIZE = 1024
#: A string value that is most likely a mask put in place of a secret.
MASK = re.compile(
    r"\*{3,}|<[^<>]{0,40}>|\[[A-Za-z _-]{0,40}\]|(redacted|masked|hidden|filtered|secret)", re.IGNORECASE
)


def recorded(task: str, args_text: str, kwargs_text: str, maxsize: int = REPR_MAXSIZE) -> tuple[list, dict]:
    """``(args, kwargs)`` of a run from its recorded reprs; :class:`ActionRefused` when not exact."""
    args = _parse(task, "positional arguments", args_text, maxsize)
    kwargs = _parse(task, "keyword arguments", kwargs_text or "{}", maxsize)
    if not isinstance(args, list | tuple):
        raise ActionRefused(f"{task}: recorded positional arguments {args_text!r} are not a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ActionRefused(f"{task}: recorded keyword arguments {kwargs_text!r} are not a dict")
    return list(args), kwargs


def _parse(task: str, label: str, text: str, maxsize: int) -> Any:
    if not text:
        raise ActionRefused(
            f"{task}: its {label} were not recorded (no task-sent or task-received event was seen), "
            "so it cannot be sent again with the same ones"
        )
    if len(text) >= maxsize or text.endswith("…"):
        raise ActionRefused(
            f"{task}: its recorded {label} are {len(text)} characters long and may have been cut "
            f"(Celery keeps {maxsize}); sending them again could change them"
        )
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ActionRefused(
            f"{task}: its recorded {label} {text[:80]!r} are not plain JSON values ({type(exc).__name__}); "
            "a custom argsrepr or a type the JSON serializer converts cannot be sent again as it was"
        ) from exc
    _check(task, label, value)
    return value


def _check(task: str, label: str, value: Any, depth: int = 0) -> None:
    if value is Ellipsis:
        raise ActionRefused(
            f"{task}: its recorded {label} were abbreviated by Celery ('...': nested too deep), "
            "so they cannot be sent again as they were"
        )
    if isinstance(value, list | tuple):
        for item in value:
            _check(task, label, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(task, label, key, depth + 1)
            _check(task, label, item, depth + 1)
    elif isinstance(value, str) and MASK.fullmatch(value.strip()):
        raise ActionRefused(
            f"{task}: its recorded {label} hold {value!r}, which looks like a mask put in place of a "
            "secret (argsrepr/kwargsrepr): sending it again would replace the real value"
        )
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise ActionRefused(f"{task}: its recorded {label} hold a {type(value).__name__}, not a JSON value")
