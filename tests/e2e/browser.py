"""Headless Chromium for the journeys: users in their own browser contexts, console watched.

Every page opened through :class:`Browsing` records console errors, uncaught exceptions and Content
Security Policy violations (Chromium reports those as console errors "Refused to ... because it
violates the following Content Security Policy directive"). ``assert_clean()`` fails the test when
any was seen. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import ARTIFACTS, DEMO_PASSWORD, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_CACHE = ROOT / "var" / "e2e-cache"
AXE_VERSION = "4.10.3"


@dataclass
class ConsoleEntry:
    user: str
    url: str
    kind: str
    text: str

    def __str__(self) -> str:
        return f"[{self.user}] {self.kind} on {self.url}: {self.text}"


@dataclass
class Browsing:
    """Opens pages as demo users against the live portal and keeps what their consoles said."""

    browser: Any
    base_url: str
    journey: str
    problems: list[ConsoleEntry] = field(default_factory=list)
    pages: list[Any] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def new_page(self, user: str = "anonymous", *, accept_downloads: bool = False) -> Any:
        context = self.browser.new_context(
            base_url=self.base_url, accept_downloads=accept_downloads, viewport={"width": 1400, "height": 900}
        )
        context.set_default_timeout(15_000)
        context.set_default_navigation_timeout(30_000)
        self.contexts.append(context)
        page = context.new_page()
        self.watch(page, user)
        self.pages.append(page)
        return page

    def another_page(self, page: Any, user: str) -> Any:
        """A second tab in the same browser context (same signed-in user)."""
        tab = page.context.new_page()
        self.watch(tab, user)
        self.pages.append(tab)
        return tab

    def watch(self, page: Any, user: str) -> None:
        def on_console(message: Any) -> None:
            # Chromium probes /favicon.ico by itself; the portal declares no icon, that is no page error.
            if (message.location or {}).get("url", "").endswith("/favicon.ico"):
                return
            if message.type == "error" or "Content Security Policy" in message.text:
                self.problems.append(ConsoleEntry(user, page.url, f"console.{message.type}", message.text))

        def on_error(error: Any) -> None:
            self.problems.append(ConsoleEntry(user, page.url, "pageerror", str(error)))

        page.on("console", on_console)
        page.on("pageerror", on_error)

    def login(self, user: str, *, accept_downloads: bool = False) -> Any:
        """Open a fresh browser context and sign in as the demo user named after its role."""
        page = self.new_page(user, accept_downloads=accept_downloads)
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(user)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/accounts/login" not in url)
        return page

    def shot(self, page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.journey}-{len(self.shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    def assert_clean(self) -> None:
        assert not self.problems, "console errors or CSP violations:\n" + "\n".join(map(str, self.problems))

    def close(self, *, failed: bool) -> None:
        if failed:
            for index, page in enumerate(self.pages):
                if not page.is_closed():
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(Exception):  # best effort evidence
                        page.screenshot(
                            path=str(SCREENSHOTS / f"{self.journey}-failure-{index}.png"), full_page=True
                        )
        for context in self.contexts:
            with contextlib.suppress(Exception):  # the browser may already be gone
                context.close()


def axe_script() -> Path | None:
    """Return axe.min.js from the npm registry (``npm pack axe-core``), cached under var/."""
    target = AXE_CACHE / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    work = AXE_CACHE / "download"
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "pack", f"axe-core@{AXE_VERSION}", "--silent", "--pack-destination", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    tarballs = sorted(work.glob("axe-core-*.tgz"))
    if proc.returncode != 0 or not tarballs:
        return None
    with tarfile.open(tarballs[-1]) as tar:
        member = tar.getmember("package/axe.min.js")
        source = tar.extractfile(member)
        assert source is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read())
    return target


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """Run axe-core on the page (WCAG 2 A/AA rules) and return its serious and critical violations.

    The page's CSP forbids inline scripts, so axe is evaluated through the DevTools protocol
    (``page.evaluate``), which the CSP does not govern; the page itself stays unmodified.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(source + "\n;undefined")
    result = page.evaluate(
        """async () => {
            const r = await window.axe.run(document, {
                runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
                resultTypes: ['violations'],
            });
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + (n.failureSummary || '')),
            }));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
