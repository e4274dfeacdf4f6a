from django.apps import AppConfig


class InsightConfig(AppConfig):
    name = "insight"
    verbose_name = "Insight: delivery metrics, drift, notifications"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - the notification side-channel and task-failure counters
