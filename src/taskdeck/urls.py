"""taskdeck's URLs: include under the dashboard prefix, e.g. ``path("taskdeck/", include("taskdeck.urls"))``.

The dashboard's pages sit at the prefix itself (``/taskdeck/``, namespace
``taskdeck``), the JSON API under ``api/``.

``/metrics`` is usually mounted at the site root instead: ``path("metrics", taskdeck.metrics.view)``.
"""

from django.urls import include, path

from taskdeck import metrics
from taskdeck.api import api

urlpatterns = [
    path("api/", api.urls),
    path("metrics", metrics.view, name="taskdeck-metrics"),
    path("", include("taskdeck.dashboard.urls")),
]
