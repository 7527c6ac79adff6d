"""Results in the Django database at close to bare Celery's speed.

- :mod:`~taskdeck.results.backend`: the direct backend (django-celery-results'
  tables, one upsert per state), the default without a Redis for records;
- :mod:`~taskdeck.results.upsert`: the upsert statement itself;
- :mod:`~taskdeck.results.started`: STARTED held back for tasks that end at once;
- :mod:`~taskdeck.results.connections`: how workers keep their database
  connections between tasks;
- :mod:`~taskdeck.results.writebehind` and :mod:`~taskdeck.results.flusher`:
  results through Redis, rows written in batches (opt-in);
- :mod:`~taskdeck.results.record`: one record per task run (result and
  monitor facts) through a Redis stream, written by the recorder: the
  default where a Redis holds the records (:func:`taskdeck.preset.default_result_backend`).

docs/results.md says why, with the figures.
"""

BACKEND = "taskdeck.results.backend:DatabaseBackend"
WRITE_BEHIND = "taskdeck.results.writebehind:WriteBehindBackend"
RECORD = "taskdeck.results.record:RecordBackend"
FIXUP = "taskdeck.results.connections:fixup"
#: The message header taskdeck's publisher sets to the publish time (seconds
#: since the epoch): a run's wait time without a ``task-sent`` event.
SENT_HEADER = "taskdeck_sent"
