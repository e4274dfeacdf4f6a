from django.urls import path

from . import views

app_name = "inventory"
urlpatterns = [
    path("", views.matrix, name="matrix"),
    path("apps/<str:name>/", views.app_detail, name="app"),
    path("instances/", views.instances, name="instances"),
]
