"""``taskdeck status`` and ``taskdeck top`` from recorded real events: windows named, queues in order."""

from __future__ import annotations

import pytest
from celery import current_app
from django.utils import timezone
from rich.console import Console

from taskdeck.models import QueueSample, TaskRun
from taskdeck.monitor.sampler import configured_queues
from taskdeck.terminal import render, snapshot, top_view
from taskdeck.windows import window_label, window_name

pytestmark = [pytest.mark.django_db(transaction=True)]


def text_of(drawn: object, width: int = 200) -> str:
    console = Console(width=width, record=True)
    console.print(drawn)
    return console.export_text()


@pytest.fixture
def sampled() -> list[str]:
    """A sample of each configured queue, written in reverse alphabetical order, plus one undeclared."""
    app = current_app._get_current_object()
    names = configured_queues(app, None)()
    assert names != sorted(names)  # else the order checked below would prove nothing
    for name in [*sorted(names, reverse=True), "aaa_undeclared"]:
        QueueSample.objects.create(sampled_at=timezone.now(), queue=name, ready=1, by_priority={"0": 1})
    return names


def lines_naming(text: str, names: list[str]) -> list[str]:
    """The names in the order their table rows appear in ``text``."""
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    return [row for row in rows if row in names]


@pytest.mark.usefixtures("recorded")
def test_status_names_its_window_and_keeps_the_configured_queue_order(sampled):
    app = current_app._get_current_object()
    text = text_of(render(snapshot(app=app, live=False)))
    assert "last 5m: finished 8  failed 1" in text  # the recorded events: 8 runs, one import_feed failure
    assert lines_naming(text, [*sampled, "aaa_undeclared"]) == [*sampled, "aaa_undeclared"]
    assert "Recent failures (the latest 10)" in text and "catalog.tasks.import_feed" in text
    assert "must be http(s)" in text
    assert "reports." not in text  # a failures table: no successful run in it


@pytest.mark.usefixtures("recorded")
def test_top_lists_recent_runs_with_failures_marked_and_the_same_queue_rows(sampled):
    app = current_app._get_current_object()
    text = text_of(top_view(60, app))
    assert "last 1m: finished 8" in text
    runs = [line for line in text.splitlines() if ".tasks." in line]
    assert len(runs) == TaskRun.objects.count() == 8
    marked = [line for line in runs if "✗" in line]
    assert len(marked) == 1 and "import_feed" in marked[0] and "FAILURE" in marked[0]
    assert all("SUCCESS" in line for line in runs if line not in marked)
    assert "Recent runs (the latest 15; ✗ failed: 1)" in text
    # status and top draw a queue and a worker alike: the same rows, in the same order.
    status = text_of(render(snapshot(app=app, live=False)))
    for name in ("Workers", "Queues"):
        assert section(text, name) == section(status, name) and len(section(text, name)) > 4
    assert lines_naming(text, [*sampled, "aaa_undeclared"]) == [*sampled, "aaa_undeclared"]


def section(text: str, title: str) -> list[str]:
    """The lines of one table, from its title to the next table's title."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    end = next(
        i
        for i, line in enumerate(lines[start + 1 :], start + 1)
        if not line.startswith(("┏", "┃", "┡", "│", "└"))
    )
    return lines[start:end]


@pytest.mark.usefixtures("recorded")
def test_a_hostile_task_name_is_text_not_markup():
    TaskRun.objects.filter(name="catalog.tasks.import_feed").update(name="[bold red]x[/] [link=http://e]y")
    text = text_of(top_view(60, current_app._get_current_object()))
    assert "[bold red]x[/] [link=http://e]y" in text


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(60, "1m"), (300, "5m"), (900, "15m"), (3600, "1h"), (86400, "24h"), (7 * 86400, "7d"), (90, "90s")],
)
def test_window_labels(seconds, label):
    assert window_label(seconds) == label and window_name(seconds) == f"last {label}"
