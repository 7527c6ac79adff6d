"""django-celery-results' own unit suite, run against taskdeck's result backends (docs/results.md)."""
