from django.apps import AppConfig


class TaskdeckConfig(AppConfig):
    name = "taskdeck"
    label = "taskdeck"
    verbose_name = "taskdeck"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from taskdeck import checks, conf, install_checks, security_checks, settings_checks, signals  # noqa: F401

        signals.connect()
        from taskdeck.dashboard import lockout  # noqa: F401  (its signal receivers)
