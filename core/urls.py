from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from taskdeck import metrics

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # Monitoring: the JSON API at /taskdeck/api/ (schema: /taskdeck/api/openapi.json),
    # and /metrics for Prometheus at the root, where scrapers look for it.
    path("taskdeck/", include("taskdeck.urls")),
    path("metrics", metrics.view, name="metrics"),
]
