"""The guest's path in real headless Chromium at a phone's size, against the portal on a real HTTP
server with the SMSC simulator placing the calls. Each step leaves a screenshot in
artifacts/screenshots/."""

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import update

from browser import PHONE_VIEWPORT, screenshot
from conftest import add_neighbour
from portal import settings
from portal.storage import access_session, utcnow, verification

pytestmark = pytest.mark.browser

BROWSER_MAC = "02:bb:00:00:00:01"
TIMEOUT = 10_000  # ms
# A 1x1 PNG.
LOGO = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture
def portal(live_portal, neighbour_table, firewall, app):
    """The live portal as the phone reaches it. The browser connects from 127.0.0.1, which gets a
    neighbour entry; it uses the portal's own host name (localhost), since other hosts are captive."""
    add_neighbour(neighbour_table, "127.0.0.1", BROWSER_MAC)
    port = live_portal.url.rsplit(":", 1)[1]
    return SimpleNamespace(url=f"http://localhost:{port}", firewall=firewall,
                           engine=app.extensions["callpass"].engine)


@pytest.fixture
def new_phone(browser):
    """Phone-sized browser contexts with a chosen language and JavaScript on or off."""
    contexts = []

    def make(locale="en-US", javascript=True):
        context = browser.new_context(viewport=PHONE_VIEWPORT, device_scale_factor=2, is_mobile=True,
                                      has_touch=True, locale=locale,
                                      java_script_enabled=javascript)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        return page
    yield make
    for context in contexts:
        context.close()


def fits_the_screen(page):
    """Nothing sticks out sideways (a phone would need sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def snap(page, name):
    """Check the page fits a phone's width, and save its screenshot as guest-<name>.png."""
    assert fits_the_screen(page), name
    screenshot(page, f"guest-{name}")


def place_call(simulator, digits):
    """The guest dials the number: the simulator notifies the portal, as the provider would."""
    answer = requests.post(simulator.url + "/sim/call", data={"phone": digits}, timeout=10)
    assert answer.ok, answer.text


def test_whole_flow_in_russian(portal, new_phone, simulator):
    page = new_phone(locale="ru-RU")
    page.goto(portal.url + "/")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.get_by_role("heading", level=1).inner_text() == "Выход в интернет по бесплатному звонку"
    snap(page, "ru-1-form")

    page.get_by_label("Ваш номер телефона").fill("8 (916) 123-45-67")
    page.get_by_role("button", name="Получить номер для звонка").click()
    page.wait_for_url(re.compile(r"/wait/"))
    number = page.locator("#call-number")
    assert re.fullmatch(r"\+7 \d{3} \d{3}-\d{2}-\d{2}", number.inner_text())
    call = page.get_by_role("link", name="Позвонить")
    assert call.get_attribute("href") == "tel:+" + re.sub(r"\D", "", number.inner_text())
    assert page.get_by_role("button", name="Скопировать номер").is_visible()
    assert page.get_by_text("Звоните с номера +7 916 123-45-67.").is_visible()
    assert page.get_by_text("После звонка интернет заработает").is_visible()
    assert page.get_by_text("Ждём вашего звонка…").is_visible()
    assert number.evaluate("n => parseFloat(getComputedStyle(n).fontSize)") >= 28  # large
    snap(page, "ru-2-wait")

    assert [c for c in portal.firewall.calls if c[0] not in ("list", "up")] == []  # nobody yet
    place_call(simulator, "79161234567")
    page.get_by_role("heading", name="Вы в интернете").wait_for()  # the page polled and reloaded
    assert ("allow", BROWSER_MAC, 240 * 60) in portal.firewall.calls
    snap(page, "ru-3-online")

    page.goto(portal.url + "/")
    assert page.get_by_text(re.compile(r"работает до \d\d:\d\d, ещё около 4 часов\.")).is_visible()


def test_whole_flow_in_english_with_the_language_switch(portal, new_phone, simulator):
    page = new_phone(locale="uk-UA")
    page.goto(portal.url + "/")
    assert page.locator("html").get_attribute("lang") == "uk"
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    snap(page, "en-1-form")

    page.get_by_label("Your phone number").fill("+7 916 765-43-21")
    page.get_by_role("button", name="Get a number to call").click()
    page.wait_for_url(re.compile(r"/wait/"))
    assert page.locator("html").get_attribute("lang") == "en"  # remembered by the cookie
    assert page.get_by_role("link", name="Call now").is_visible()
    page.get_by_role("button", name="Copy the number").click()
    page.get_by_text("Number copied").wait_for()
    snap(page, "en-2-wait")

    place_call(simulator, "79167654321")
    page.get_by_role("heading", name="You are online").wait_for()
    assert page.get_by_text("You can close this window.").is_visible()
    assert page.get_by_text(re.compile(r"online until \d\d:\d\d, about 4 more hours\.")).is_visible()
    snap(page, "en-3-online")

    # A window left open says so when the time is up, by itself (no script polls an online page).
    with portal.engine.begin() as conn:
        conn.execute(update(access_session).where(access_session.c.mac == BROWSER_MAC)
                     .values(ends_at=utcnow() + timedelta(seconds=3)))
    page.reload()
    assert page.get_by_text(re.compile(r"online until \d\d:\d\d, 1 more minute\.")).is_visible()
    page.get_by_role("heading", name="Your time online has ended").wait_for()
    assert page.get_by_role("button", name="Get a new number").is_visible()


def test_an_invalid_number_is_explained_next_to_the_field(portal, new_phone):
    page = new_phone()
    page.goto(portal.url + "/")
    page.get_by_label("Your phone number").fill("12345")
    page.get_by_role("button", name="Get a number to call").click()
    error = page.locator("#phone-error")
    error.wait_for()
    assert error.inner_text() == ("This is not a valid phone number. "
                                  "Check the country code and the digits.")
    field = page.get_by_label("Your phone number")
    assert field.input_value() == "12345"
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("aria-describedby") == "phone-error"
    snap(page, "en-invalid-number")

    page.get_by_label("Your phone number").fill("")
    page.get_by_role("button", name="Get a number to call").click()
    assert page.locator("#phone-error").inner_text() == "Enter your phone number."


def test_an_expired_number_and_getting_a_new_one(portal, new_phone):
    page = new_phone()
    page.goto(portal.url + "/")
    page.get_by_label("Your phone number").fill("+79161112233")
    page.get_by_role("button", name="Get a number to call").click()
    page.wait_for_url(re.compile(r"/wait/"))
    first_url = page.url
    with portal.engine.begin() as conn:
        conn.execute(update(verification).values(expires_at=utcnow() - timedelta(seconds=1)))
    page.get_by_role("heading", name="Time is up").wait_for()  # found by the page's polling
    snap(page, "en-expired")

    page.get_by_role("button", name="Get a new number").click()
    page.get_by_role("heading", name="Call this number to get online").wait_for()
    assert page.url != first_url and "/wait/" in page.url
    assert page.locator("#countdown").inner_text().startswith("4:")
    snap(page, "en-new-number")


def test_a_branded_venue_with_terms_to_accept(portal, new_phone, app, tmp_path):
    logo = tmp_path / "logo.png"
    logo.write_bytes(LOGO)
    svc = app.extensions["callpass"]
    svc.config["venue"]["logo"] = str(logo)
    settings.save(svc, {"venue.name": "Кафе «Котик»", "venue.require_terms": True,
                        "venue.welcome": "Добро пожаловать!\nWi-Fi бесплатно для гостей кафе.",
                        "venue.terms_text": "Не нарушайте закон.\nНе раздавайте сеть."}, "test")
    page = new_phone(locale="ru-RU")
    page.goto(portal.url + "/")
    assert page.locator("img.logo").evaluate("img => img.naturalWidth") == 1
    assert page.get_by_text("Кафе «Котик»").first.is_visible()
    page.get_by_text("Правила пользования", exact=True).click()  # opens the terms
    assert page.get_by_text("Не раздавайте сеть.").is_visible()
    page.get_by_text("Правила пользования", exact=True).click()  # and closes them
    page.get_by_label("Ваш номер телефона").fill("+7 916 123-45-67")
    page.get_by_role("button", name="Получить номер для звонка").click()
    page.locator("#terms-error").wait_for()
    assert page.get_by_label("Ваш номер телефона").input_value() == "+7 916 123-45-67"
    snap(page, "ru-terms-required")

    page.get_by_label("Я принимаю правила пользования").check()
    page.get_by_role("button", name="Получить номер для звонка").click()
    page.wait_for_url(re.compile(r"/wait/"))


def test_the_flow_without_javascript(portal, new_phone, simulator):
    page = new_phone(locale="ru-RU", javascript=False)
    page.goto(portal.url + "/")
    snap(page, "nojs-1-form")
    page.get_by_label("Ваш номер телефона").fill("+7 916 555-44-33")
    page.get_by_role("button", name="Получить номер для звонка").click()
    page.wait_for_url(re.compile(r"/wait/"))
    assert not page.locator("#copy").is_visible()  # the copy button needs JavaScript
    assert page.get_by_role("link", name="Проверить звонок").is_visible()
    assert page.get_by_role("link", name="Позвонить").is_visible()
    snap(page, "nojs-2-wait")

    place_call(simulator, "79165554433")
    page.get_by_role("heading", name="Вы в интернете").wait_for()  # the page refreshed itself
    snap(page, "nojs-3-online")
