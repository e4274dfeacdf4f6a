from django.apps import AppConfig


class RollbacksConfig(AppConfig):
    name = "rollbacks"
    verbose_name = "Rollbacks (Git revert pull requests)"

    def ready(self) -> None:
        # Verified pull_request webhooks of rollback/* branches trigger tracking at once.
        from promotions.pullrequests import register_pr_state_handler

        from .services import rollback_pr_event

        register_pr_state_handler(rollback_pr_event)
