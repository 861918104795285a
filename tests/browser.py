"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for page tests.

conftest loads this module as a plugin (pytest_plugins), so every test module can ask for the
fixtures `browser` (one Chromium for the session) and `phone_page` (a fresh phone-sized page).
`screenshot(page, name)` saves to artifacts/screenshots/ (git-ignored).
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CALLPASS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
PHONE_VIEWPORT = {"width": 390, "height": 844}
# Flags the closed network here needs: no background calls home, no GPU.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def missing():
    """Why a browser test cannot run here, or None."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"Debian's chromium is not installed ({CHROMIUM})"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


@pytest.fixture(scope="session")
def browser():
    """One Chromium for the whole test session."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def phone_page(browser):
    """A fresh phone-sized page (new context: no cookies shared between tests)."""
    context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name):
    """Save a full-page screenshot as artifacts/screenshots/<name>.png; returns the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
