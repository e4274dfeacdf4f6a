from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "sandbox"
    verbose_name = "Sandbox (emulated Argo CD, forge, demo repo)"
    default_auto_field = "django.db.models.BigAutoField"
