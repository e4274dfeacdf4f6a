from django.apps import AppConfig


class PromotionsConfig(AppConfig):
    name = "promotions"
    verbose_name = "Promotions and rollbacks"

    def ready(self) -> None:
        # Register the kind with the change lifecycle (imported here: models must be ready first).
        from . import kind  # noqa: F401  (registers PROMOTION)
