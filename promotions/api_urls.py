from django.urls import path

from . import api

urlpatterns = [
    path("promotions", api.promotions, name="api-promotions"),
    path("promotions/<int:pk>", api.promotion_detail, name="api-promotion"),
    path("promotions/<int:pk>/approve", api.promotion_approve, name="api-promotion-approve"),
    path("promotions/<int:pk>/reject", api.promotion_reject, name="api-promotion-reject"),
    path(
        "promotions/<int:pk>/checklist-override",
        api.promotion_checklist_override,
        name="api-promotion-checklist-override",
    ),
    path("promotions/<int:pk>/cancel", api.promotion_cancel, name="api-promotion-cancel"),
    path("promotions/<int:pk>/sync-retry", api.promotion_sync_retry, name="api-promotion-sync-retry"),
    path(
        "promotions/<int:pk>/sync-override", api.promotion_sync_override, name="api-promotion-sync-override"
    ),
]
