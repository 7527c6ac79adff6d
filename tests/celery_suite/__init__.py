"""Celery's own integration suites (canvas, tasks) run on taskdeck's stack: docs/canvas.md."""
