from django.urls import path

from . import views

app_name = "rollbacks"
urlpatterns = [
    path("", views.rollback_list, name="list"),
]
