"""The WSGI application ``taskdeck up`` serves with gunicorn: the project's own, with its static files.

The project's ``WSGI_APPLICATION``, as ``runserver`` loads it. When
whitenoise's middleware is in ``MIDDLEWARE`` (the reference project), it
serves the static files; otherwise they are served by Django's staticfiles
handler, as ``runserver`` does, so the dashboard's stylesheets and scripts load
in a project that has no file server of its own.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

from taskdeck.startup import settle

WHITENOISE = "whitenoise.middleware.WhiteNoiseMiddleware"


def load() -> Any:
    from django.core.servers.basehttp import get_internal_wsgi_application

    django.setup(set_prefix=False)
    application = get_internal_wsgi_application()
    if WHITENOISE in settings.MIDDLEWARE or "django.contrib.staticfiles" not in settings.INSTALLED_APPS:
        return application
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    return StaticFilesHandler(application)


application = load()
settle()  # the project's WSGI module may not have
