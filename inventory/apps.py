from django.apps import AppConfig

from .config import load_config


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "What runs where"

    def ready(self) -> None:
        # A bad GITOPSPORTAL_CONFIG stops start-up here with the line and key named (manage.py
        # prints ImproperlyConfigured as one line). Reading it touches no database.
        load_config()
