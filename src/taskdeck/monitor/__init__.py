"""The monitor's data layer: the recorder process and what it feeds.

``recorder.Recorder`` captures Celery events on one thread, folds task events
into :class:`~taskdeck.models.TaskRun` rows in batches (``runs``), then fans
the batch out to subscribers (``subscribers.Subscriber``): worker rows,
rollups, metric totals, the queue sampler, reconciliation from the results
table, retention and alerts, each testable alone.
"""
