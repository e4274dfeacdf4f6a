"""Pages about what runs where."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import require_role
from accounts.roles import Role

from .models import ArgoApplication


@require_GET
@require_role(Role.VIEWER)
def matrix(request: HttpRequest) -> HttpResponse:
    apps = ArgoApplication.objects.live().select_related("environment", "cluster")[:200]
    return render(request, "inventory/matrix.html", {"apps": apps, "nav": "matrix"})
