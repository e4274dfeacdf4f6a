from django.apps import AppConfig


class GitopsPortalConfig(AppConfig):
    name = "gitopsportal"
    verbose_name = "GitOps Portal"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects login auditing
