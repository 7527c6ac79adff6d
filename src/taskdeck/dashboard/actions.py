"""What the dashboard does through Celery: retry, revoke, purge, worker pool control, dead letters.

Each method of :class:`Actions` goes through Celery itself (``send_task``,
remote control, the broker channel's ``queue_purge``), never around it, and
writes one :class:`~taskdeck.models.AuditEntry` with the user, the target and
the outcome — a refused or failed action too. Views check the permission and
CSRF; this module checks whether the action is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from taskdeck import conf, payloads
from taskdeck.errors import ActionRefused
from taskdeck.models import AuditEntry, DeadLetter, TaskRun, Worker
from taskdeck.monitor.merge import FINAL
from taskdeck.monitor.sampler import configured_queues

Action = AuditEntry.Action

#: Message properties a requeued dead letter keeps (others are the broker's own).
REQUEUED_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode")

#: Pools whose size Celery can change at run time without losing work.
RESIZABLE_POOLS = frozenset({"prefork"})


@dataclass
class Outcome:
    ok: bool
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


class Actions:
    """The dashboard's actions, taken by ``user`` from ``remote_addr`` on Celery app ``app``."""

    def __init__(self, app: Any, user: Any, remote_addr: str | None = None, timeout: float = 1.0) -> None:
        self.app = app
        self.user = user
        self.remote_addr = remote_addr
        self.timeout = timeout

    # --- tasks -------------------------------------------------------------

    def retry(self, run: TaskRun) -> Outcome:
        """Send ``run``'s task again with its arguments captured at publish, to its queue (a new task id).

        Refused unless the captured payload is whole and unredacted (:func:`taskdeck.payloads.refusal`).
        """

        def send() -> tuple[str, dict[str, Any]]:
            if run.state not in FINAL:
                raise ActionRefused(
                    f"{run.name or run.task_id} is {run.state}, not finished: revoke it first"
                )
            if not run.name:
                raise ActionRefused(f"task {run.task_id}: its name was never recorded")
            payload = payloads.read(run.payload)
            refused = payloads.refusal(run.name, payload)
            if refused is not None:
                raise ActionRefused(refused)
            args, kwargs = payload.args or [], payload.kwargs or {}
            options: dict[str, Any] = {}
            if run.queue:
                options["queue"] = run.queue
            if run.priority is not None:
                options["priority"] = run.priority
            # A tuple, as the original call had: the new run records the same argsrepr.
            result = self.app.send_task(run.name, args=tuple(args), kwargs=kwargs, **options)
            where = run.queue or "the queue its routes choose"
            return (
                f"{run.name} sent again to {where} as {result.id}",
                {"task_id": result.id, "queue": run.queue, "priority": run.priority},
            )

        return self._record(Action.RETRY, run.task_id, send)

    def retry_many(self, runs: Iterable[TaskRun]) -> tuple[int, list[str]]:
        """Retry each run; returns how many were sent and the reasons of those that were not."""
        sent, errors = 0, []
        for run in runs:
            outcome = self.retry(run)
            if outcome.ok:
                sent += 1
            else:
                errors.append(outcome.message)
        return sent, errors

    def revoke(self, run: TaskRun, terminate: bool = False) -> Outcome:
        """Revoke a run not finished yet; with ``terminate`` the worker process running it is signalled."""

        def revoke() -> tuple[str, dict[str, Any]]:
            if run.state in FINAL:
                raise ActionRefused(
                    f"{run.name or run.task_id} already ended ({run.state}): nothing to revoke"
                )
            self.app.control.revoke(run.task_id, terminate=terminate, signal="SIGTERM")
            what = "revoked and its process sent SIGTERM" if terminate else "revoked"
            return f"{run.name or run.task_id} {what}", {"terminate": terminate}

        return self._record(Action.TERMINATE if terminate else Action.REVOKE, run.task_id, revoke)

    # --- dead letters ------------------------------------------------------

    def requeue(self, letter: DeadLetter) -> Outcome:
        """Publish a dead task message again where it came from, under a new task id, and drop the letter.

        Refused unless it is a valid task message now (:func:`taskdeck.guard.requeue_problem`).
        """
        from kombu import uuid

        from taskdeck.guard import requeue_problem

        def send() -> tuple[str, dict[str, Any]]:
            reason = requeue_problem(self.app, letter)
            if reason is not None:
                raise ActionRefused(f"dead letter {letter.pk} cannot be requeued: {reason}")
            props = letter.properties
            headers = {key: value for key, value in letter.headers.items() if key != "compression"}
            old_id, new_id = headers.get("id"), uuid()
            headers["id"] = new_id
            if headers.get("root_id") in (None, old_id):
                headers["root_id"] = new_id
            options = {key: props[key] for key in REQUEUED_PROPERTIES if props.get(key) is not None}
            if options.get("correlation_id") == old_id:
                options["correlation_id"] = new_id
            exchange, routing_key = props.get("exchange") or "", props.get("routing_key") or ""
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
                conn.Producer().publish(
                    bytes(letter.body or b""),
                    exchange=exchange,
                    routing_key=routing_key,
                    headers=headers,
                    content_type=props.get("content_type"),
                    content_encoding=props.get("content_encoding"),
                    retry=False,
                    **options,
                )
            letter.delete()
            return (
                f"{headers['task']} requeued to exchange {exchange!r}, routing key {routing_key!r} "
                f"as {new_id} (was {old_id})",
                {
                    "task_id": new_id,
                    "original_id": old_id,
                    "task": letter.task,
                    "exchange": exchange,
                    "routing_key": routing_key,
                },
            )

        return self._record(Action.REQUEUE, f"dead letter {letter.pk}", send)

    def delete_letter(self, letter: DeadLetter) -> Outcome:
        def delete() -> tuple[str, dict[str, Any]]:
            pk = letter.pk
            letter.delete()
            what = f"{letter.task or 'no task name'}[{letter.task_id or 'no id'}]"
            # Its task name and routing key: what a scope sees it by (taskdeck.policy.audit_for).
            routing_key = (letter.properties or {}).get("routing_key")
            detail = {"task_id": letter.task_id, "task": letter.task, "routing_key": routing_key}
            return f"dead letter {pk} deleted ({letter.kind} {what})", detail

        return self._record(Action.DELETE_LETTER, f"dead letter {letter.pk}", delete)

    # --- queues ------------------------------------------------------------

    def purge(self, queue: str) -> Outcome:
        """Delete every ready message of ``queue`` (all its priority sub-queues); unacked ones stay."""

        def purge() -> tuple[str, dict[str, Any]]:
            if queue not in self.queues():
                raise ActionRefused(f"{queue!r} is not a queue this app declares (CELERY_TASK_QUEUES)")
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
                count = conn.default_channel.queue_purge(queue) or 0
            return f"purged {count} message(s) from {queue}", {"purged": count}

        return self._record(Action.PURGE, queue, purge)

    def queues(self) -> list[str]:
        return configured_queues(self.app, conf.monitor()["QUEUES"])()

    # --- waiting messages --------------------------------------------------

    def delete_message(self, queue: str, ref: str) -> Outcome:
        """Take waiting message ``ref`` off ``queue`` for good (a worker that took it first wins)."""
        return self._take(Action.DELETE_MESSAGE, queue, ref, None)

    def move_message(self, queue: str, ref: str, to: str) -> Outcome:
        """Put waiting message ``ref`` of ``queue`` on queue ``to`` (a declared one), in one step."""
        return self._take(Action.MOVE_MESSAGE, queue, ref, to)

    def _take(self, action: str, queue: str, ref: str, to: str | None) -> Outcome:
        from taskdeck.monitor import messages

        def take() -> tuple[str, dict[str, Any]]:
            if to is not None and to not in self.queues():
                if not to:
                    raise ActionRefused(f"move message {ref}: name the queue to move it to")
                raise ActionRefused(f"{to!r} is not a queue this app declares (CELERY_TASK_QUEUES)")
            if to == queue:
                raise ActionRefused(f"message {ref} is already on {queue}")
            taken = messages.remove(self.app, queue, ref, to)
            if taken is None:
                raise ActionRefused(f"message {ref} is not waiting on {queue} (a worker may have taken it)")
            what = f"{taken.task or 'unreadable message'}[{taken.task_id or ref}]"
            done = f"moved from {queue} to {to}" if to else f"deleted from {queue}"
            detail = {"queue": queue, "to": to, "task": taken.task, "task_id": taken.task_id}
            return f"{what} {done}", {**detail, "priority": taken.priority}

        return self._record(action, f"message {ref} on {queue}"[:255], take)

    # --- workers -----------------------------------------------------------

    def resize_pool(self, hostname: str, delta: int) -> Outcome:
        """Grow (``delta`` > 0) or shrink a prefork worker's pool by ``abs(delta)`` processes."""

        def resize() -> tuple[str, dict[str, Any]]:
            worker = self._online(hostname)
            if worker.pool not in RESIZABLE_POOLS:
                raise ActionRefused(
                    f"{hostname} runs the {worker.pool or 'unknown'} pool: only a prefork pool "
                    "is resized at run time"
                )
            if delta < 0:
                # Asked now, not read from the last `inspect stats`: a grow since then counts.
                inspect = self.app.control.inspect([hostname], timeout=self.timeout)
                live = self._reply(hostname, [inspect.stats()])
                processes = len((live.get("pool") or {}).get("processes") or []) or worker.concurrency or 0
                if processes + delta < 1:
                    raise ActionRefused(f"{hostname} has {processes} process(es): a pool keeps one")
            control = self.app.control.pool_grow if delta > 0 else self.app.control.pool_shrink
            reply = self._reply(
                hostname, control(n=abs(delta), destination=[hostname], reply=True, timeout=self.timeout)
            )
            verb = "grow" if delta > 0 else "shrink"
            return f"{hostname}: {reply.get('ok') or f'pool will {verb}'} by {abs(delta)}", {"n": delta}

        return self._record(Action.POOL_GROW if delta > 0 else Action.POOL_SHRINK, hostname, resize)

    def shutdown(self, hostname: str) -> Outcome:
        """Warm shutdown: the worker stops taking tasks and exits when its running ones finish."""

        def shutdown() -> tuple[str, dict[str, Any]]:
            self._online(hostname)
            # The worker raises WorkerShutdown on receipt and never replies.
            self.app.control.shutdown(destination=[hostname])
            return f"{hostname} asked to shut down (warm: running tasks finish first)", {}

        return self._record(Action.SHUTDOWN, hostname, shutdown)

    def _online(self, hostname: str) -> Worker:
        worker = Worker.objects.filter(hostname=hostname).first()
        if worker is None:
            raise ActionRefused(f"no worker {hostname!r} was ever seen")
        if not worker.online:
            raise ActionRefused(f"{hostname} is offline")
        return worker

    def _reply(self, hostname: str, replies: list[dict[str, Any]] | None) -> dict[str, Any]:
        for reply in replies or []:
            if hostname in reply:
                answer = reply[hostname]
                if isinstance(answer, dict) and answer.get("error"):
                    raise ActionRefused(f"{hostname}: {answer['error']}")
                return answer if isinstance(answer, dict) else {"ok": str(answer)}
        raise ActionRefused(f"{hostname} did not answer within {self.timeout:g}s")

    # --- the audit log -----------------------------------------------------

    def _record(self, action: str, target: str, do: Callable[[], tuple[str, dict[str, Any]]]) -> Outcome:
        try:
            message, detail = do()
            outcome = Outcome(True, message, detail)
        except ActionRefused as exc:
            outcome = Outcome(False, str(exc))
        except Exception as exc:  # the broker or a worker failed us: record it, say it
            outcome = Outcome(False, f"{action} {target} failed: {type(exc).__name__}: {exc}")
        user = self.user if getattr(self.user, "pk", None) else None
        AuditEntry.objects.create(
            user=user,
            username=getattr(self.user, "get_username", lambda: "")() or "",
            action=action,
            target=target,
            ok=outcome.ok,
            message=outcome.message,
            detail=outcome.detail,
            remote_addr=self.remote_addr,
        )
        return outcome
