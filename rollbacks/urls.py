from django.urls import path

from . import views

app_name = "rollbacks"
urlpatterns = [
    path("", views.rollback_list, name="list"),
    path("new/", views.rollback_new, name="new"),
    path("<int:pk>/", views.rollback_detail, name="detail"),
    path("<int:pk>/checks/", views.rollback_checks, name="checks"),
    path("<int:pk>/rendered/", views.rollback_rendered, name="rendered"),
    path("<int:pk>/cancel/", views.rollback_cancel, name="cancel"),
    path("<int:pk>/approve-after/", views.rollback_approve_after, name="approve_after"),
    path("<int:pk>/sync-override/", views.rollback_sync_override, name="sync_override"),
    path("<int:pk>/sync-retry/", views.rollback_sync_retry, name="sync_retry"),
]
