"""Results in the Django database at close to bare Celery's speed.

- :mod:`~taskdeck.results.backend`: the result backend (django-celery-results'
  tables, one upsert per state);
- :mod:`~taskdeck.results.upsert`: the upsert statement itself;
- :mod:`~taskdeck.results.connections`: how workers keep their database
  connections between tasks.

docs/results.md says why, with the figures.
"""

BACKEND = "taskdeck.results.backend:DatabaseBackend"
FIXUP = "taskdeck.results.connections:fixup"
