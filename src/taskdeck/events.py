"""Workers publish task events in batches, on a timer, instead of one publish per event.

Celery's worker already buffers task events and sends them as one
``task.multi`` message (a list of events) per flush; but it asks its event
loop to flush as soon as each event is buffered, so on a busy worker nearly
every event is a publish of its own: on Redis a ``PUBLISH`` round trip, made
by the worker's main process, which is what limits a prefork worker's
throughput. Measured (docs/benchmarks.md): with events on, the main process
spent 40% of its time publishing them, and a worker drained noop tasks at
half its rate without events.

:class:`BatchTaskEvents` makes the flush wait ``TASKDECK["MONITOR"]["EVENT_FLUSH_INTERVAL"]``
seconds after the first buffered event, so one publish carries every event
of that interval (Celery still flushes at once when ``buffer_limit`` events
are waiting). Consumers of events see nothing new: Celery's event receiver
(and so the recorder, Flower, ``celery events``) takes ``task.multi`` lists
as it always did. Events reach them up to the interval later. ``0`` gives
Celery's behaviour back. Buffered events are flushed when the consumer
stops (warm shutdown, broker reconnect); a worker killed with SIGKILL loses
at most one interval of events, which the recorder fills in from the result
backend (docs/monitoring.md, reconciliation).
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from taskdeck import conf


class BatchTaskEvents(bootsteps.StartStopStep):
    """Consumer step: flush the worker's buffered task events on a timer."""

    name = "taskdeck.events.BatchTaskEvents"
    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.pending = False

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        interval = float(conf.monitor()["EVENT_FLUSH_INTERVAL"] or 0)
        # Only where Celery buffers (an event loop: prefork, solo, threads with a hub).
        if interval <= 0 or c.hub is None or dispatcher is None or not dispatcher.on_send_buffered:
            return
        self.pending = False

        def flush() -> None:
            self.pending = False
            c._flush_events()

        def on_send_buffered() -> None:
            if not self.pending:
                self.pending = True
                c.hub.call_later(interval, flush)

        # The dispatcher keeps the callback it was made with; the Events step
        # makes a new dispatcher on every (re)connection, and this step starts after it.
        dispatcher.on_send_buffered = on_send_buffered

    def stop(self, c: Any) -> None:
        # Runs before the Events step closes the dispatcher: nothing buffered is left behind.
        if c.event_dispatcher is not None:
            c.event_dispatcher.flush()
        self.pending = False

    shutdown = stop
