from django.urls import path

from . import views

app_name = "promotions"
urlpatterns = [
    path("", views.promotion_list, name="list"),
    path("rollbacks/", views.rollback_list, name="rollback_list"),
]
