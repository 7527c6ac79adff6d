"""The web dashboard: server-rendered pages over the monitor's tables, with actions through Celery.

- :mod:`~taskdeck.dashboard.views`: the pages (thin, over :mod:`taskdeck.querysets`);
- :mod:`~taskdeck.dashboard.access`: login, the view permission, the read-only
  role, action permissions and CSRF (the rules themselves in :mod:`taskdeck.policy`,
  shared with the API and /metrics), the page for a database that is down;
- :mod:`~taskdeck.dashboard.actions`: retry, revoke, purge, pool and shutdown
  through Celery, each written to the audit log;
- :mod:`~taskdeck.dashboard.arguments`: a run's arguments read back from their
  recorded repr, refusing any that may have been cut;
- :mod:`~taskdeck.dashboard.graph`: chains, groups and chords laid out as a graph;
- :mod:`~taskdeck.dashboard.bootstrap`: the embedded default's local admin.

Templates are under ``templates/taskdeck/``, static files (htmx and uPlot
vendored, no CDN) under ``static/taskdeck/``. See docs/dashboard.md.
"""
