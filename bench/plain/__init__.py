"""Plain Celery + django-celery-results: the configuration of the notes, without taskdeck."""
