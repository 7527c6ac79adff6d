"""Chains, groups and chords on the database backends: what differs from django-celery-results.

:class:`CanvasBackend` is mixed into :class:`~taskdeck.results.backend.DatabaseBackend`
(and so into write-behind). docs/canvas.md says what Celery's own canvas
suite showed, and what each part fixes.

Failures reach the end of a chain first. When a chain step fails (its task
raised, or its chord's header did), Celery stores the step's FAILURE, then
marks every step chained after it failed (``_fail_chain``). A client in
``get()`` on the chain's last result raises as soon as it sees a *parent*
failed (``AsyncResult.get`` follows parents), and may then read the last
result's state before it was written: PENDING. With Redis the window is a
fraction of a millisecond; with one PostgreSQL commit per state it is one
commit per chained step, and ``get()``'s short first poll finds it. Here the
steps after the failed one are stored first, then the failed step: whoever
sees the step failed sees everything after it failed too. A group chained
after the failed step has each of its tasks failed (Celery fails only the
group's own id, and ``get()`` on the group waited forever). And when a chord's
header task fails, the chord will fail (its callback is never sent with a
failed result): the steps chained after the chord are failed at once, with
the ``ChordError`` the callback gets later, not when the rest of the header
has finished — ``get()`` raises on the header task's failure, and the
chain's result is FAILURE by then.

Chords count every task that completes them. django-celery-results sets
a chord's ``ChordCounter`` to the number of results in its header, but a
header entry that ends in a group (``group(a, chain(b, group(c, d)))``)
is completed by each task of that group, as Celery counts it: two of the
three completions used the counter up, the callback found the header not
ready and was never sent, and ``get()`` waited forever. Here the counter
starts at the number of tasks that complete the chord (a group's tasks
each count), as Celery's Redis backend counts them.

A generator header is not unrolled: Celery sends its tasks as the generator
yields them, and completions are counted before the size is known: the
counter starts unsized (:data:`UNSIZED`) and takes the size Celery computes
(``set_chord_size``, called as the header's last task is sent); it keeps the
task ids that completed it, in header order, for the callback's argument.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from celery import states
from celery.backends.base import Backend
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult, allow_join_result, result_from_tuple
from celery.utils.functional import _regen
from django.db import router, transaction
from django.db.models import F
from django_celery_results.models import ChordCounter

logger = logging.getLogger("taskdeck.results")

#: ``ChordCounter.count`` of a chord whose size is not known yet: completions
#: count down from it; ``set_chord_size`` takes away the difference.
UNSIZED = 2**30
#: ``ChordCounter.sub_tasks`` key of a generator header's completions.
LAZY = "completed"


class CanvasBackend(Backend):
    """The canvas parts of taskdeck's database backends (see the module docstring)."""

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        if store_result and state in states.PROPAGATE_STATES and getattr(request, "chord", None):
            self.fail_after_chord(request.chord, task_id, exc)
        chain = getattr(request, "chain", None) if request is not None else None
        if chain and store_result:
            self._fail_chain(chain, exc, traceback, store_result=store_result, state=state)
            request = copy.copy(request)
            request.chain = None
        super().mark_as_failure(task_id, exc, traceback, request, store_result, call_errbacks, state)

    def _fail_chain(
        self,
        chain: Any,
        exc: Any,
        traceback: Any = None,
        store_result: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        # Celery fails each signature chained after a failed step under its own id;
        # a group (or a chain in one) there has its tasks' results to fail too, or
        # get() on the group waits for results that will never come.
        super()._fail_chain(list(_with_members(chain)), exc, traceback, store_result, state)

    def fail_after_chord(self, chord_callback: Any, task_id: str, exc: BaseException) -> None:
        """A header task failed: the chord will fail, so the steps chained after it fail now."""
        callback = maybe_signature(chord_callback, app=self.app)
        chain = callback.options.get("chain")
        if chain:
            self._fail_chain(chain, ChordError(f"Dependency {task_id} raised {exc!r}"))

    def chord_error_from_stack(self, callback: Any, exc: BaseException | None = None) -> Any:
        if exc is None:
            exc = sys.exc_info()[1]
        chain = callback.options.pop("chain", None)
        try:
            if chain:
                try:
                    backend = self.app._tasks[callback.task].backend
                except KeyError:
                    backend = self
                backend._fail_chain(chain, exc)
            return super().chord_error_from_stack(callback, exc)
        finally:
            if chain is not None:
                callback.options["chain"] = chain

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        if isinstance(header_result_args, GroupResult):  # Celery < 5.1 passes the result itself
            group_id, results = header_result_args.id, header_result_args.results
        else:
            group_id, results = header_result_args
        if isinstance(results, _regen):  # a generator header, not unrolled here
            sub_tasks, count = json.dumps({LAZY: []}), UNSIZED
        else:
            header = GroupResult(group_id, list(results))
            sub_tasks, count = json.dumps([r.as_tuple() for r in header]), _leaves(header.results)
        # A frozen chord applied again reuses its group id: a new run, a new count.
        ChordCounter.objects.update_or_create(
            group_id=group_id, defaults={"sub_tasks": sub_tasks, "count": count}
        )

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        # A listed header was counted when it was applied (its tasks that complete
        # it: Celery's count); a generator's size is known now, once per run.
        ChordCounter.objects.filter(group_id=group_id, count__gt=UNSIZED // 2).update(
            count=F("count") - (UNSIZED - chord_size)
        )

    def add_to_chord(self, group_id: str, result: Any) -> None:
        """One more task completes the chord (``Task.add_to_chord``), its result after the header's."""
        with transaction.atomic(using=router.db_for_write(ChordCounter)):
            counter = ChordCounter.objects.select_for_update().filter(group_id=group_id).first()
            if counter is None:
                logger.warning("chord %s: no ChordCounter row to add task %s to", group_id, result.id)
                return
            counter.count += 1
            if not is_lazy(counter.sub_tasks):  # a lazy header takes each completion as it comes
                counter.sub_tasks = json.dumps([*json.loads(counter.sub_tasks), result.as_tuple()])
            counter.save(update_fields=["count", "sub_tasks"])

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        task_id, group_id = request.id, request.group
        if not group_id or not task_id:
            return
        with transaction.atomic(using=router.db_for_write(ChordCounter)):
            counter = ChordCounter.objects.select_for_update().filter(group_id=group_id).first()
            if counter is None:
                logger.warning("chord %s: no ChordCounter row (task %s completed it)", group_id, task_id)
                return
            counter.count -= 1
            changed = ["count"]
            if is_lazy(counter.sub_tasks):
                parts = json.loads(counter.sub_tasks)
                parts[LAZY].append([getattr(request, "group_index", None), task_id])
                counter.sub_tasks = json.dumps(parts)
                changed.append("sub_tasks")
            if counter.count > 0:
                counter.save(update_fields=changed)
                return
            counter.delete()
        # Every completion is stored before it is counted: the join finds them all.
        callback = maybe_signature(request.chord, app=self.app)
        self.trigger_callback(callback, self.header_result(group_id, json.loads(counter.sub_tasks)))

    def trigger_callback(self, callback: Any, header: GroupResult) -> None:
        """Send the chord's callback with the header's results, or fail it naming the failed task."""
        try:
            with allow_join_result():
                value = header.join(timeout=self.app.conf.result_chord_join_timeout, propagate=True)
        except Exception as exc:
            culprit = next(_failed(header.results), None)
            reason = f"Dependency {culprit.id} raised {exc!r}" if culprit else repr(exc)
            logger.error("chord %s failed: %s", header.id, reason)
            error = ChordError(reason)
            error.__cause__ = exc  # a group callback's tasks fail with the header task's own error
            self.chord_error_from_stack(callback, error)
            return
        try:
            callback.delay(value)
        except Exception as exc:
            logger.exception("chord %s: its callback could not be sent", header.id)
            self.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))

    def header_result(self, group_id: str, parts: Any) -> GroupResult:
        """The chord header's results, in header order, from ``ChordCounter.sub_tasks``."""
        if isinstance(parts, dict):
            done = sorted(parts[LAZY], key=lambda part: (part[0] is None, part[0] or 0))
            return GroupResult(group_id, [AsyncResult(tid, app=self.app) for _, tid in done], app=self.app)
        return GroupResult(group_id, [result_from_tuple(r, app=self.app) for r in parts], app=self.app)


def _with_members(chain: Any) -> Iterator[Any]:
    """The signatures of a chain, each group or chain followed by its tasks, depth first."""
    try:
        steps = list(chain or ())
    except TypeError:  # a request's chain may be a placeholder
        return
    for step in steps:
        yield step
        if isinstance(step, dict) and step.get("subtask_type") in ("group", "chain"):
            yield from _with_members((step.get("kwargs") or {}).get("tasks"))


def _leaves(results: Any) -> int:
    """How many tasks complete a chord whose header has these results (a group: each of its tasks)."""
    return sum(_leaves(r.results) if isinstance(r, GroupResult) else 1 for r in results)


def is_lazy(sub_tasks: str) -> bool:
    """Whether ``ChordCounter.sub_tasks`` holds a generator header's completions (not its results)."""
    return sub_tasks.startswith("{")


def _failed(results: Any) -> Iterator[AsyncResult]:
    """The header's results that failed, depth first (a header entry may be a group)."""
    for result in results:
        if isinstance(result, GroupResult):
            yield from _failed(result.results)
        elif result.state in states.PROPAGATE_STATES:
            yield result
