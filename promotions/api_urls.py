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
]
