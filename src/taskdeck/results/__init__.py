"""Results in the Django database at close to bare Celery's speed.

- :mod:`~taskdeck.results.backend`: the result backend (django-celery-results'
  tables, one upsert per state), the default;
- :mod:`~taskdeck.results.upsert`: the upsert statement itself;
- :mod:`~taskdeck.results.started`: STARTED held back for tasks that end at once;
- :mod:`~taskdeck.results.connections`: how workers keep their database
  connections between tasks;
- :mod:`~taskdeck.results.writebehind` and :mod:`~taskdeck.results.flusher`:
  results through Redis, rows written in batches (opt-in);
- :mod:`~taskdeck.results.record`: one record per task run (result and
  monitor facts) through a Redis stream, written by the recorder.

docs/results.md says why, with the figures.
"""

BACKEND = "taskdeck.results.backend:DatabaseBackend"
WRITE_BEHIND = "taskdeck.results.writebehind:WriteBehindBackend"
RECORD = "taskdeck.results.record:RecordBackend"
FIXUP = "taskdeck.results.connections:fixup"
#: The message header taskdeck's publisher sets to the publish time (seconds
#: since the epoch): a run's wait time without a ``task-sent`` event.
SENT_HEADER = "taskdeck_sent"
