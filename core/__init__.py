# This makes sure the app is always imported when Django starts,
# so that @shared_task binds to it (the notes' NOTES section).
from .celery_app import app as celery_app

__all__ = ("celery_app",)
