"""Formatting for the dashboard's templates: times (absolute and relative), durations, states."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import quote, urlencode

from django import template
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()

STATE_CLASS = {
    "SUCCESS": "ok",
    "FAILURE": "bad",
    "RETRY": "warn",
    "REVOKED": "revoked",
    "REJECTED": "bad",
    "STARTED": "run",
    "RECEIVED": "idle",
    "SENT": "idle",
    "STUCK": "warn",
    "LOST": "bad",
    "PROGRESS": "run",
}


@register.filter
def state_class(state: str) -> str:
    return STATE_CLASS.get((state or "").upper(), "idle")


@register.simple_tag
def state_badge(state: str) -> str:
    return format_html('<span class="badge {}">{}</span>', state_class(state), (state or "?").lower())


def ago(seconds: float) -> str:
    """``12s``, ``4m 05s``, ``3h 12m``, ``2d 4h``: short, for a table cell."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


@register.simple_tag
def when(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """Absolute and relative: ``<time>`` with the local (TIME_ZONE) time, and "3m 05s ago" beside it.

    The relative part is rewritten every few seconds by dashboard.js from the
    ``datetime`` attribute, so a page left open stays right.
    """
    if not isinstance(value, dt.datetime):
        return mark_safe('<span class="none">—</span>')  # a constant
    now = now or timezone.now()
    local = timezone.localtime(value)
    same_day = local.date() == timezone.localtime(now).date()
    shown = local.strftime("%H:%M:%S" if same_day else "%b %d %H:%M:%S")
    delta = (now - value).total_seconds()
    relative = f"{ago(delta)} ago" if delta >= 0 else f"in {ago(-delta)}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time> <span class="ago" data-since="{}">{}</span>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " " + (local.tzname() or ""),
        shown,
        value.isoformat(),
        relative,
    )


@register.filter
def duration(seconds: float | None) -> str:
    """``850 µs``, ``12 ms``, ``1.25 s``, ``3m 04s``."""
    if seconds is None or seconds == "":
        return "—"
    seconds = float(seconds)
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return ago(seconds)


@register.filter
def age(seconds: float | None) -> str:
    return "—" if seconds in (None, "") else ago(float(seconds))


@register.filter
def short_id(task_id: str) -> str:
    return (task_id or "")[:8]


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.simple_tag(takes_context=True)
def query(context: Any, **changes: Any) -> str:
    """The current query string with ``changes`` applied (a None or "" value removes the key)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        params.pop(key, None)
        if value not in (None, ""):
            params[key] = value
    params.pop("fragment", None)
    return "?" + urlencode(sorted(params.items())) if params else "?"


@register.filter
def short_name(name: str) -> str:
    """``catalog.tasks.resize_image`` -> ``resize_image``; ``notifications:send_sms`` -> ``send_sms``."""
    return (name or "").replace(":", ".").rsplit(".", 1)[-1]


@register.filter
def node_line(run: Any) -> str:
    """A workflow graph node's second line, in its accessible name too: ``success · 12 ms · 1a2b3c4d``."""
    runtime = "" if run.runtime is None else f" · {duration(run.runtime)}"
    return f"{(run.state or '?').lower()}{runtime} · {short_id(run.task_id)}"


@register.filter
def get_item(mapping: dict[str, Any] | None, key: str) -> Any:
    return (mapping or {}).get(key)


_PREFIXES: dict[str, str] = {}


@register.filter
def task_url(task_id: str) -> str:
    """``{% url 'taskdeck:task' id %}`` without resolving the URL pattern again for each row of a page."""
    script = get_script_prefix()
    prefix = _PREFIXES.get(script)
    if prefix is None:
        prefix = _PREFIXES[script] = reverse("taskdeck:tasks")
    return f"{prefix}{quote(str(task_id), safe='')}/"


@register.filter
def clip(text: str, length: int) -> str:
    """The first ``length`` characters, with an ellipsis if cut (cheaper than ``truncatechars``)."""
    text = str(text or "")
    return text if len(text) <= length else text[: length - 1] + "…"


@register.simple_tag
def workflow_nodes(graph: Any, current: str) -> str:
    """The nodes of a workflow graph's SVG, each a link named with its state; ``current`` is this page's task.

    One Python loop: a template block per node took ~2 ms a node, a second
    for the 500 nodes drawn of a large group.
    """
    parts = []
    for n in graph.nodes:
        run = n.run
        name = _esc(clip(short_name(run.name) or "(unknown)", 28))
        line = _esc(node_line(run))
        task_id, state, full = _esc(run.task_id), _esc(run.state), _esc(run.name)
        this = run.task_id == current
        here = ' aria-current="page"' if this else ""
        x, y = n.x, n.y
        parts.append(
            f'<a href="{_esc(task_url(run.task_id))}" class="node {"current" if this else ""}"'
            f' data-state="{state}" data-task="{task_id}" aria-label="{name} {line}'
            f'{" (this task)" if this else ""}, {full or "unknown task"}"'
            f"{here}>\n"
            f"<title>{full} [{task_id}] {state}</title>\n"
            f'<rect class="box" x="{x}" y="{y}" width="210" height="46" rx="5"/>\n'
            f'<rect class="bar s-{state_class(run.state)}" x="{x}" y="{y}" width="5" height="46" rx="2"/>\n'
            # The line breaks are the space between the two texts that a screen reader and axe read
            # as the link's visible text, which must be part of its name ("name line").
            f'<text x="{x + 13}" y="{y + 19}">{name}</text>\n'
            f'<text class="sub" x="{x + 13}" y="{y + 36}">{line}</text>\n'
            "</a>"
        )
    return mark_safe("\n".join(parts))


def _esc(text: Any) -> str:
    """Django's escaping of a value (``&<>"'``), without its lazy-string wrapper per call."""
    return html.escape(str(text if text is not None else ""), quote=True)
