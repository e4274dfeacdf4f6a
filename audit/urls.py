from django.urls import path

from . import views

app_name = "audit"
urlpatterns = [
    path("", views.event_list, name="event_list"),
    path("events/<int:sequence>/", views.event_detail, name="event_detail"),
    path("changes/", views.change_list, name="change_list"),
    path("changes/<int:pk>/", views.change_detail, name="change_detail"),
    path("export/<str:fmt>/", views.export, name="export"),
    path("public-key.pem", views.public_key, name="public_key"),
]
