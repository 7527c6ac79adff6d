"""taskdeck: Celery inside Django, with routing, priority lanes and monitoring."""

__version__ = "0.1.0"
