import pytest
from playwright.sync_api import sync_playwright
from django.contrib.auth import get_user_model
from accounts.roles import Role
from tests.factories import user_with_role
from .test_dora_metrics import history, NOW  # noqa

@pytest.mark.django_db(transaction=True)
def test_shot(live_server, history, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    u = user_with_role(Role.ADMIN, "shot"); 
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox","--headless=new"])
        page = b.new_page(viewport={"width": 1300, "height": 900})
        msgs=[]
        page.on("console", lambda m: msgs.append(m.text))
        page.goto(live_server.url + "/accounts/login/")
        page.fill("input[name=username]", "shot"); page.fill("input[name=password]", "demo-pass-1234")
        page.click("button[type=submit]")
        page.goto(live_server.url + "/insight/?period=week&count=4")
        page.screenshot(path="/tmp/insight-shots/dora.png", full_page=True)
        page.goto(live_server.url + "/insight/drift/")
        page.screenshot(path="/tmp/insight-shots/drift.png", full_page=True)
        page.goto(live_server.url + "/insight/notifications/")
        page.screenshot(path="/tmp/insight-shots/notif.png", full_page=True)
        print("CONSOLE", msgs)
        b.close()
