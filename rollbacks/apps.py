from django.apps import AppConfig


class RollbacksConfig(AppConfig):
    name = "rollbacks"
    verbose_name = "Rollbacks (Git revert pull requests)"

    def ready(self) -> None:
        # Register the kind with the lifecycle, and track rollback/* branches on verified
        # pull_request webhooks at once. Imported here: models must be ready first.
        from changes.pullrequests import register_pr_state_handler

        from . import kind  # noqa: F401  (registers ROLLBACK)
        from .tracking import rollback_pr_event

        register_pr_state_handler(rollback_pr_event)
