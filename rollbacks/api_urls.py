from django.urls import path

from . import api

urlpatterns = [
    path("rollbacks", api.rollbacks_collection, name="api-rollbacks"),
    path("rollbacks/<int:pk>", api.rollback_item, name="api-rollback"),
    path("rollbacks/<int:pk>/cancel", api.rollback_cancel, name="api-rollback-cancel"),
    path("rollbacks/<int:pk>/sync-retry", api.rollback_sync_retry, name="api-rollback-sync-retry"),
    path("rollbacks/<int:pk>/sync-override", api.rollback_sync_override, name="api-rollback-sync-override"),
]
