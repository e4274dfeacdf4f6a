"""The project's URLs plus one probe endpoint built with the real ``api_view`` decorator."""

from django.urls import path

from api.http import api_view, read_json
from gitopsportal.urls import urlpatterns as portal_urlpatterns


@api_view(("GET", "POST"), role="viewer")
def whoami(request):
    payload = read_json(request) if request.method == "POST" else {}
    return {"user": request.user.get_username(), "echo": payload}


urlpatterns = [*portal_urlpatterns, path("api/probe/whoami", whoami, name="probe-whoami")]
