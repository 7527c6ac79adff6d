"""Secrets kept out of what the monitor shows: values under secret-looking keys are masked.

A key is secret when its name, lower-cased with ``-`` read as ``_``, contains
one of :data:`SECRET_KEYS` (``password``, ``db_password``, ``X-Api-Key``...).
Masking walks dicts and lists to :data:`MAX_DEPTH`; anything deeper is masked
whole, since it could not be looked into.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SECRET_KEYS = ("password", "passwd", "token", "secret", "api_key", "apikey", "authorization", "credential")
MASK = "[redacted]"
MAX_DEPTH = 32


def is_secret(key: Any, keys: Iterable[str] = SECRET_KEYS) -> bool:
    name = str(key).lower().replace("-", "_")
    return any(word in name for word in keys)


def redact(value: Any, keys: Iterable[str] = SECRET_KEYS) -> tuple[Any, bool]:
    """``value`` with every secret key's value replaced by :data:`MASK`, and whether any was."""
    words = tuple(keys)
    found = False

    def walk(item: Any, depth: int) -> Any:
        nonlocal found
        if isinstance(item, dict | list | tuple) and depth >= MAX_DEPTH:
            found = True
            return MASK
        if isinstance(item, dict):
            out = {}
            for key, inner in item.items():
                if is_secret(key, words):
                    found = True
                    out[key] = MASK
                else:
                    out[key] = walk(inner, depth + 1)
            return out
        if isinstance(item, list | tuple):
            return [walk(inner, depth + 1) for inner in item]
        return item

    return walk(value, 0), found
