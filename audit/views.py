"""Audit pages (auditor role)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.permissions import require_role
from accounts.roles import Role

from .models import AuditEvent


@require_GET
@require_role(Role.AUDITOR)
def event_list(request: HttpRequest) -> HttpResponse:
    events = AuditEvent.objects.all()[:100]
    return render(request, "audit/event_list.html", {"events": events, "nav": "audit"})
