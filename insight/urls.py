from django.urls import path

from . import views

app_name = "insight"

urlpatterns = [
    path("", views.dora, name="dora"),
    path("export.csv", views.dora_csv, name="dora_csv"),
    path("drift/", views.drift, name="drift"),
    path("drift/<int:pk>/resources/", views.drift_resources, name="drift_resources"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/new/", views.subscription_new, name="subscription_new"),
    path("notifications/<int:pk>/toggle/", views.subscription_toggle, name="subscription_toggle"),
    path("notifications/<int:pk>/delete/", views.subscription_remove, name="subscription_delete"),
]
