from django.urls import path

from . import views

app_name = "promotions"
urlpatterns = [
    path("", views.promotion_list, name="list"),
    path("new/", views.promotion_new, name="new"),
    path("request/", views.promotion_create, name="create"),
    path("<int:pk>/", views.promotion_detail, name="detail"),
    path("<int:pk>/checks/", views.promotion_checks, name="checks"),
    path("<int:pk>/rendered/", views.promotion_rendered, name="rendered"),
    path("<int:pk>/approve/", views.promotion_approve, name="approve"),
    path("<int:pk>/reject/", views.promotion_reject, name="reject"),
    path("<int:pk>/override-checklist/", views.promotion_checklist_override, name="checklist_override"),
    path("<int:pk>/cancel/", views.promotion_cancel, name="cancel"),
    path("<int:pk>/sync-override/", views.promotion_sync_override, name="sync_override"),
    path("<int:pk>/sync-retry/", views.promotion_sync_retry, name="sync_retry"),
    path("blocks/<int:pk>/clear/", views.promotion_block_clear, name="block_clear"),
]
