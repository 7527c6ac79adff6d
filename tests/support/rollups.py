"""The coarse rollup tables, and those of every task, checked against the minute rows they must add up to."""

from __future__ import annotations

from typing import Any

from taskdeck.models import ALL_TASKS, EVERY_ROLLUP, Rollup, TaskRollup, TaskRun, TaskTotal

COUNTS = ("succeeded", "failed", "revoked", "rejected", "retried")


def rows(model: type[Rollup]) -> dict[tuple[int, str, str], dict[str, Any]]:
    """Every row of ``model`` by (period start, name, queue)."""
    return {
        (int(row.start().timestamp()), row.name, row.queue): {
            **{count: getattr(row, count) for count in COUNTS},
            "runtime_hist": row.runtime_hist,
            "wait_hist": row.wait_hist,
        }
        for row in model.objects.all()
    }


def minute_sums(model: type[Rollup]) -> dict[tuple[int, str, str], dict[str, Any]]:
    """The minute rows added up into ``model``'s periods: what ``model``'s rows must be.

    For a table of every task, the rows of each period whatever their name and queue.
    """
    every_task = model in ALL_TASKS.values()
    out: dict[tuple[int, str, str], dict[str, Any]] = {}
    for (minute, name, queue), row in rows(TaskRollup).items():
        acc = out.setdefault(
            (minute - minute % model.period, *(("", "") if every_task else (name, queue))),
            {**dict.fromkeys(COUNTS, 0), "runtime_hist": {}, "wait_hist": {}},
        )
        for count in COUNTS:
            acc[count] += row[count]
        for hist in ("runtime_hist", "wait_hist"):
            for key, value in row[hist].items():
                acc[hist][key] = acc[hist].get(key, 0) + value
    return out


def assert_coarse_rows_add_up() -> None:
    """Every coarse table and every table of every task holds exactly the sums of the minute rows;
    there are minute rows."""
    assert TaskRollup.objects.exists()
    for model in EVERY_ROLLUP[1:]:
        assert rows(model) == minute_sums(model), model.__name__


def snapshot() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """Every run (without its row id and write time), every rollup table and the totals."""
    runs = {}
    for run in TaskRun.objects.values().order_by("task_id"):
        run.pop("id")
        run.pop("updated_at")
        runs[run["task_id"]] = run
    totals = sorted(
        (t.name, t.queue, t.state, t.count, t.runtime_buckets, t.wait_buckets)
        for t in TaskTotal.objects.all()
    )
    return runs, {model.__name__: rows(model) for model in EVERY_ROLLUP}, totals
