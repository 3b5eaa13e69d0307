"""The console in a real browser: Debian's chromium driven by Playwright.

tests/conftest.py builds the `browser` and `console` fixtures from this module, so the
console's own tests (tests/test_console.py) and the dashboard on the real fleet
(tests/test_fleet.py) drive the same tab. Every tab records console errors and dialogs
and fails on close if there were any. Screenshots go to a temporary folder, or into
docs/screenshots/ with SHENLUN_SCREENSHOTS=1 (the README's pictures).
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.procs import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None. CI installs chromium
    (scripts/test.sh): there a missing browser fails instead of skipping."""
    if os.environ.get("CI"):
        return None
    if not CHROMIUM.exists():
        return "chromium is not installed (scripts/test.sh installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


class Console:
    """One browser tab on the console, recording every console error and dialog."""

    def __init__(self, browser, base_url: str, shots: Path, **context_options) -> None:
        self.context = browser.new_context(locale="zh-CN", **context_options)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.shots = shots
        self.closed = False
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(
            f"{msg.text} @ {msg.location.get('url')}"))
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, page: str) -> None:
        self.page.goto(f"{self.base_url}/console/#{page}")
        self.page.wait_for_selector(f"#page-{page} .panel")

    def enter_key(self, key: str) -> None:
        self.page.click("#keys summary")
        self.page.fill("#key-input", key)
        self.page.press("#key-input", "Enter")
        self.page.wait_for_function("() => document.getElementById('key-state').textContent === '已设置'")
        self.page.click("#keys summary")

    def screenshot(self, name: str) -> None:
        self.page.evaluate("() => document.getElementById('toast').classList.remove('show')")
        self.page.wait_for_timeout(300)  # the toast's fade
        folder = ROOT / "docs" / "screenshots" if os.environ.get("SHENLUN_SCREENSHOTS") else self.shots
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        self.closed = True
        assert self.errors == [], self.errors
        assert self.dialogs == []  # no alert() ever ran
