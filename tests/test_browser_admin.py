"""The admin pages in real headless Chromium, on a real server: sign in through the form, change
settings, end a guest's session, read the logs. Screenshots go to artifacts/screenshots/admin-*."""

import pytest

from admin_support import ADMIN_NAME, ADMIN_PASSWORD
from browser import screenshot
from conftest import GUEST_MAC
from portal import auth

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}


def sign_in(page, base):
    page.goto(base + "/admin/")
    assert "/admin/login" in page.url
    page.fill('[name="name"]', ADMIN_NAME)
    page.fill('[name="password"]', ADMIN_PASSWORD)
    page.click('button:has-text("Sign in")')
    page.wait_for_url(base + "/admin/")


def test_admin_on_a_phone(app, live_portal, phone_page, firewall):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    guest = live_portal.guest
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    base, page = live_portal.url, phone_page

    page.goto(base + "/admin/login")
    page.fill('[name="name"]', ADMIN_NAME)
    page.fill('[name="password"]', "not the password")
    page.click('button:has-text("Sign in")')
    assert page.locator("#login-error").inner_text() == "Wrong name or password."
    screenshot(page, "admin-login-phone")

    sign_in(page, base)
    assert page.locator("#online .figure").inner_text() == "1"
    assert page.locator("#provider .good").inner_text().endswith("250.80 RUB")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-dashboard-phone")

    page.click('nav a:has-text("Settings")')
    page.fill('[name="venue.name.en"]', "")
    page.fill('[name="portal.session_minutes"]', "0")
    page.click('button:has-text("Save")')
    assert page.locator('[id="venue.name.en-error"]').inner_text() == "This cannot be empty."
    assert page.locator('[id="portal.session_minutes-error"]').is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-settings-errors-phone")
    page.fill('[name="venue.name.en"]', "Café Fox")
    page.fill('[name="portal.session_minutes"]', "90")
    page.click('button:has-text("Save")')
    assert "Saved." in page.locator(".flash.ok").inner_text()
    assert page.locator('[name="portal.session_minutes"]').input_value() == "90"
    # The guest page, by the portal's own name (localhost), shows the new name at once.
    page.goto(base.replace("127.0.0.1", "localhost") + "/")
    assert "Café Fox" in page.title()
    page.goto(base + "/admin/sessions")
    assert page.locator("#live tbody tr").count() == 1
    screenshot(page, "admin-sessions-phone")
    page.click('a:has-text("End now")')
    assert page.locator("h1").inner_text() == "End this session?"  # a second step, no script
    assert GUEST_MAC in page.locator("dl.facts").inner_text()
    assert ("revoke", GUEST_MAC) not in firewall.calls
    screenshot(page, "admin-end-session-phone")
    page.click('button:has-text("End the session")')
    assert "ended" in page.locator(".flash.ok").inner_text()
    assert ("revoke", GUEST_MAC) in firewall.calls
    assert page.locator("#ended tbody tr").count() == 1
    assert b"You are online" not in guest.client.get("/").data

    page.goto(base + "/admin/?lang=ru")
    assert page.locator("h1").inner_text() == "Обзор"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-dashboard-phone-ru")
    page.click('nav a:has-text("Сеансы")')
    assert "завершён администратором" in page.locator("#ended").inner_text()
    screenshot(page, "admin-sessions-phone-ru")


def test_admin_logs_on_a_desktop(app, live_portal, browser):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    guest = live_portal.guest
    guest.start("+79161234567")
    guest.call("79161234567")
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        sign_in(page, live_portal.url)
        screenshot(page, "admin-dashboard-desktop")
        page.click('nav a:has-text("Identification log")')
        assert page.locator("#log tbody tr").count() == 1
        assert GUEST_MAC in page.locator("#log").inner_text()
        screenshot(page, "admin-log-desktop")
        with page.expect_download() as download:
            page.click("#export")
        path = download.value.path()
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
        assert lines[0].startswith("Phone,Device (MAC),IP,") and GUEST_MAC in lines[1]
        page.click('nav a:has-text("Settings")')
        screenshot(page, "admin-settings-desktop")
        page.click('nav a:has-text("Audit log")')
        assert "exported the identification log" in page.locator("#audit").inner_text()
        screenshot(page, "admin-audit-desktop")
    finally:
        context.close()


def test_a_chain_admin_adds_a_venue_and_gives_it_its_own_name_on_a_phone(app, live_portal,
                                                                         phone_page):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    base, page = live_portal.url, phone_page
    sign_in(page, base)
    page.click('nav a:has-text("Venues")')
    assert page.locator("#venue-main .online").inner_text() == "0"
    page.click("#add-venue")
    page.fill('[name="slug"]', "Cafe Arbat")
    page.fill('[name="name"]', "Cafe on Arbat")
    page.fill('[name="nas_identifier"]', "MT-Arbat")
    page.click('button:has-text("Save")')
    assert page.locator("#slug-error").is_visible()  # nothing saved: lowercase and dashes only
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-venue-errors-phone")
    page.fill('[name="slug"]', "cafe-arbat")
    page.click('button:has-text("Save")')
    assert "Venue cafe-arbat saved." in page.locator(".flash.ok").inner_text()
    page.click("#venue-settings-link")
    assert "settings of the venue cafe-arbat" in page.locator("#venue-settings").inner_text()
    assert page.locator('[name="gateway.garden"]').count() == 0  # the chain's, not the venue's
    page.fill('[name="venue.name.en"]', "Arbat Wi-Fi")
    page.click('button:has-text("Save")')
    assert "Saved." in page.locator(".flash.ok").inner_text()
    assert page.locator('[name="venue.name.en"]').input_value() == "Arbat Wi-Fi"
    page.click('nav a:has-text("Venues")')
    assert "MT-Arbat" in page.locator("#venue-cafe-arbat").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-venues-phone")


def test_a_chain_admin_gives_a_venue_its_opennds_gateway_on_a_phone(app, live_portal, phone_page):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    base, page = live_portal.url, phone_page
    sign_in(page, base)
    page.goto(f"{base}/admin/venues/new")
    page.fill('[name="slug"]', "cafe-arbat")
    page.fill('[name="name"]', "Cafe on Arbat")
    page.fill('[name="opennds_gateway"]', "cafe-arbat-7f3k2q")
    page.click('button:has-text("Save")')
    # A gateway needs its faskey: nothing saved, the field says why.
    assert page.locator("#opennds_faskey-error").is_visible()
    page.fill('[name="opennds_faskey"]', "ab12" * 16)
    page.click('button:has-text("Save")')
    assert "Venue cafe-arbat saved." in page.locator(".flash.ok").inner_text()
    # The key is kept, never shown; the page names the faspath for the gateway's config.
    assert page.locator('[name="opennds_faskey"]').input_value() == ""
    assert "ab12" * 16 not in page.content()
    assert page.locator("#faspath").inner_text() == "/opennds/cafe-arbat/"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "admin-venue-opennds-phone")
    page.click('nav a:has-text("Venues")')
    row = page.locator("#venue-cafe-arbat").inner_text()
    assert "cafe-arbat-7f3k2q" in row and "no guest has come through it yet" in row
