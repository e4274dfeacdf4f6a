"""Pages for promotions and rollbacks."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import require_role
from accounts.roles import Role


@require_GET
@require_role(Role.VIEWER)
def promotion_list(request: HttpRequest) -> HttpResponse:
    return render(request, "promotions/list.html", {"nav": "promotions"})

