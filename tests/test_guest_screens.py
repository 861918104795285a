"""The guest pages on small phones in real headless Chromium: 360x640 and 375x667, in ru, uk and en,
with full branding (logo, welcome text, terms to accept). What a guest would notice: the phone field
and the main button above the fold, an error where the guest is looking, one language per page,
tap targets a finger can hit, hints for the guest's own device, a QR code for laptop guests.

With CALLPASS_DOCS_SCREENSHOTS=1 the screenshots also go to docs/screenshots/ (shown in README).
"""

import os
import re
import struct
import zlib
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import segno
from sqlalchemy import update

from browser import screenshot
from conftest import add_neighbour
from portal import settings
from portal.storage import utcnow, verification

pytestmark = pytest.mark.browser

BROWSER_MAC = "02:bb:00:00:00:02"
TIMEOUT = 10_000  # ms
SCREENS = [(360, 640), (375, 667)]
LANGUAGES = ["ru", "uk", "en"]
# A captive sheet (iOS's Captive Network Assistant, Android's sign-in view) draws its own bar over
# the top of the screen: what must be above the fold must fit this much less than the screen.
SHEET_BAR = 56
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
AGENTS = {
    "android": ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/126.0.0.0 Mobile Safari/537.36"),
    "iphone": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148"),
    "computer": ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/126.0.0.0 Safari/537.36"),
}
PHONE_FIELD = {"ru": "Ваш номер телефона", "uk": "Ваш номер телефону", "en": "Your phone number"}
MAIN_BUTTON = {"ru": "Получить номер для звонка", "uk": "Отримати номер для дзвінка",
               "en": "Get a number to call"}
TERMS_BOX = {"ru": "Я принимаю правила пользования", "uk": "Я приймаю правила користування",
             "en": "I accept the terms of use"}
# The venue's texts in each language (settings.Texts): a page shows its own language's.
NAME = {"ru": "Кафе «Котик»", "uk": "Кафе «Котик»", "en": "Kotik Café"}
WELCOME = {"ru": "Добро пожаловать в «Котик»!\nWi-Fi бесплатно для гостей кафе.",
           "uk": "Ласкаво просимо до «Котика»!\nWi-Fi безкоштовно для гостей кафе.",
           "en": "Welcome to Kotik!\nFree Wi-Fi for the café's guests."}
TERMS_LINE = {"ru": "Не раздавайте сеть.", "uk": "Не роздавайте мережу.",
              "en": "Do not share the network."}
TERMS = {"ru": "Не нарушайте закон.", "uk": "Не порушуйте закон.", "en": "Do not break the law."}
TERMS = {lang: "\n".join([TERMS[lang], TERMS_LINE[lang]] * 8) for lang in TERMS}


def png(width, height, rgb):
    """A solid-colour PNG (the venue's logo in these tests)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def portal(live_portal, neighbour_table, firewall, app, tmp_path):
    """The live portal of a fully branded venue, reached from the browser's own device."""
    add_neighbour(neighbour_table, "127.0.0.1", BROWSER_MAC)
    logo = tmp_path / "logo.png"
    logo.write_bytes(png(120, 40, (200, 80, 30)))
    svc = app.extensions["callpass"]
    svc.config["venue"]["logo"] = str(logo)
    settings.save(svc, {"venue.name": NAME, "venue.require_terms": True,
                        "venue.welcome": WELCOME, "venue.terms_text": TERMS}, "test")
    port = live_portal.url.rsplit(":", 1)[1]
    return SimpleNamespace(url=f"http://localhost:{port}", engine=svc.engine)


@pytest.fixture
def open_page(browser):
    """Pages of a given size, language and device (User-Agent); every request they make is kept."""
    contexts = []

    def make(size=SCREENS[0], lang="ru", device="android"):
        width, height = size
        context = browser.new_context(viewport={"width": width, "height": height},
                                      device_scale_factor=1, is_mobile=device != "computer",
                                      has_touch=device != "computer", locale=lang,
                                      user_agent=AGENTS[device])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        return page
    yield make
    for context in contexts:
        context.close()


def box(locator):
    """The element's box on the screen (x, y, width, height), scrolling included."""
    found = locator.bounding_box()
    assert found is not None, locator
    return found


def above_the_fold(page, locator):
    """Entirely visible on the first screen, under a captive sheet's bar, without scrolling."""
    assert page.evaluate("window.scrollY") == 0
    found = box(locator)
    return found["y"] >= 0 and found["y"] + found["height"] <= page.viewport_size["height"] - SHEET_BAR


def in_view(page, locator):
    """Entirely inside the visible part of the page, wherever it is scrolled to."""
    found = box(locator)
    return found["y"] >= 0 and found["y"] + found["height"] <= page.viewport_size["height"]


def wait_for_focus(page, element_id):
    """Wait until the element with element_id has the focus; fails after 5 s."""
    page.wait_for_function("id => document.activeElement && document.activeElement.id === id",
                           arg=element_id, timeout=5000)


def portal_text(page):
    """The page's visible text, the venue's own texts included (given per language), but not
    the names of the languages in the switch."""
    return page.evaluate("""() => {
        const copy = document.body.cloneNode(true);
        copy.querySelectorAll('.langs, script, noscript')
            .forEach(n => n.remove());
        return copy.innerText;
    }""")


def assert_one_language(page, lang):
    """No words of another language: Cyrillic on an English page, Latin words (beyond names like
    Wi-Fi) on a Russian or Ukrainian one, and Ukrainian letters in Russian or back."""
    text = portal_text(page)
    if lang == "en":
        assert not re.search(r"[А-яЁёІіЇїЄєҐґ]", text), text
        return
    latin = set(re.findall(r"[A-Za-z]{2,}", text)) - {"Wi", "Fi", "iPhone"}
    assert latin == set(), (lang, latin)
    other_letters = r"[ІіЇїЄєҐґ]" if lang == "ru" else r"[ЫыЭэЪъЁё]"
    assert not re.search(other_letters, text), (lang, re.findall(r"\w*" + other_letters + r"\w*", text))


def small_targets(page):
    """Links and buttons a finger would miss: less than 44 CSS px high (plain-text links inside a
    sentence are not counted)."""
    return page.evaluate("""() => [...document.querySelectorAll('a, button, summary, .check')]
        .filter(e => e.offsetParent !== null && !e.closest('p:not(.check):not(.actions)')
                     || e.matches('footer a, .terms-link a, .continue a'))
        .filter(e => e.getBoundingClientRect().height < 44)
        .map(e => e.outerHTML.slice(0, 80))""")


def fits_the_width(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def shoot(page, name):
    """A screenshot of the first screen (what the guest sees), also for the docs when asked."""
    assert fits_the_width(page), name
    path = screenshot(page, f"screen-{name}")
    if os.environ.get("CALLPASS_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}.png"))
    return path


def only_from_the_portal(page, portal):
    return [url for url in page.requested
            if not url.startswith((portal.url + "/", "data:"))] == []


@pytest.mark.parametrize("size", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_form_fits_and_its_errors_are_seen(portal, open_page, size, lang):
    page = open_page(size, lang)
    page.goto(portal.url + "/")
    field = page.get_by_label(PHONE_FIELD[lang])
    button = page.get_by_role("button", name=MAIN_BUTTON[lang])
    assert page.locator("img.logo").evaluate("img => img.naturalWidth") == 120
    assert page.get_by_text(WELCOME[lang].split("\n")[0]).count() == 1
    assert above_the_fold(page, field) and above_the_fold(page, button), box(button)
    assert above_the_fold(page, page.get_by_label(TERMS_BOX[lang]))
    assert_one_language(page, lang)
    assert small_targets(page) == []
    assert only_from_the_portal(page, portal)
    if size == SCREENS[0]:
        shoot(page, f"{lang}-form")

    # The terms not accepted, with the terms text opened first (the case that hid the error).
    page.locator(".terms summary").click()
    field.fill("+7 916 123-45-67")
    button.click()
    error = page.locator("#terms-error")
    error.wait_for()
    # The browser moves the focus (and scrolls) to an autofocus field a moment after the page
    # is shown, not as it is parsed.
    wait_for_focus(page, "accept_terms")
    assert in_view(page, error) and in_view(page, page.get_by_label(TERMS_BOX[lang]))
    assert page.get_by_label(PHONE_FIELD[lang]).input_value() == "+7 916 123-45-67"
    assert_one_language(page, lang)
    if size == SCREENS[0]:
        shoot(page, f"{lang}-terms-error")

    # Both wrong: the phone's error comes first and is the one in focus.
    page.get_by_label(PHONE_FIELD[lang]).fill("123")
    page.get_by_role("button", name=MAIN_BUTTON[lang]).click()
    error = page.locator("#phone-error")
    error.wait_for()
    wait_for_focus(page, "phone")
    assert in_view(page, error)
    assert_one_language(page, lang)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_language_switch_fits_a_320px_screen(portal, open_page, lang):
    page = open_page((320, 568), lang)
    page.goto(portal.url + "/")
    tops = page.locator(".langs a").evaluate_all("links => links.map(a => a.getBoundingClientRect().top)")
    assert len(tops) == 3 and len(set(tops)) == 1  # one row
    assert fits_the_width(page)
    assert small_targets(page) == []


def start(page, portal, lang, phone="+7 916 123-45-67"):
    page.goto(portal.url + "/")
    page.get_by_label(PHONE_FIELD[lang]).fill(phone)
    page.get_by_label(TERMS_BOX[lang]).check()
    page.get_by_role("button", name=MAIN_BUTTON[lang]).click()
    page.wait_for_url(re.compile(r"/wait/"))


@pytest.mark.parametrize("size", SCREENS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_wait_page_fits_one_screen(portal, open_page, size, lang):
    page = open_page(size, lang, device="android")
    start(page, portal, lang)
    number = page.locator("#call-number")
    call = page.locator(".actions a.button")
    waiting = page.locator(".waiting")
    assert above_the_fold(page, number) and above_the_fold(page, call)
    assert above_the_fold(page, waiting) and page.locator("#countdown").inner_text().startswith("4:")
    assert page.locator(".dial-code").count() == 0  # a phone needs no QR code
    assert "iPhone" not in portal_text(page)
    assert_one_language(page, lang)
    assert small_targets(page) == []
    if size == SCREENS[0]:
        shoot(page, f"{lang}-wait")


def test_an_iphone_is_told_about_its_sheet(portal, open_page):
    page = open_page(SCREENS[1], "ru", device="iphone")
    start(page, portal, "ru")
    hint = page.get_by_text("Это окно может закрыться, когда вы перейдёте к звонку")
    assert hint.is_visible()
    assert page.get_by_text("просто откройте любой сайт").count() == 0
    assert small_targets(page) == []
    shoot(page, "ru-wait-iphone")


def test_a_laptop_guest_gets_a_qr_code_to_dial_from_their_phone(portal, open_page):
    page = open_page((1024, 768), "en", device="computer")
    start(page, portal, "en", phone="+7 916 222-33-44")
    number = page.locator("#call-number").inner_text()
    uri = "tel:+" + re.sub(r"\D", "", number)
    code = page.locator(".dial-code svg")
    assert code.is_visible() and code.locator("title").text_content() == uri
    assert box(code)["width"] >= 120  # big enough for a phone's camera
    # The drawing is the QR code of that tel: URI (as segno draws it), made on the server.
    drawn = code.locator("path").get_attribute("d")
    assert f'd="{drawn}"' in segno.make(uri, error="m").svg_inline(scale=5, border=2)
    assert page.get_by_text("Scan with your phone's camera to call this number.").is_visible()
    assert only_from_the_portal(page, portal)
    shoot(page, "en-wait-laptop")


def test_the_online_page_says_until_when(portal, open_page, simulator):
    page = open_page(SCREENS[0], "uk")
    start(page, portal, "uk", phone="+7 916 333-44-55")
    assert requests.post(simulator.url + "/sim/call", data={"phone": "79163334455"}, timeout=10).ok
    page.get_by_role("heading", name="Ви в інтернеті").wait_for()
    assert re.fullmatch(r"Інтернет на цьому пристрої працює до \d\d:\d\d, ще близько 4 годин\.",
                        page.locator("#time-left").inner_text())  # the wait page says it too
    page.goto(portal.url + "/")
    assert re.fullmatch(r"Інтернет на цьому пристрої працює до \d\d:\d\d, ще близько 4 годин\.",
                        page.locator("#time-left").inner_text())
    assert_one_language(page, "uk")
    assert small_targets(page) == []
    shoot(page, "uk-online")


def test_the_expired_page_has_its_own_title(portal, open_page):
    page = open_page(SCREENS[0], "en")
    start(page, portal, "en", phone="+7 916 444-55-66")
    with portal.engine.begin() as conn:
        conn.execute(update(verification).values(expires_at=utcnow() - timedelta(seconds=1)))
    page.get_by_role("heading", name="Time is up").wait_for()
    assert page.title().startswith("Time is up")
    assert above_the_fold(page, page.get_by_role("button", name="Get a new number"))
    assert small_targets(page) == []
    shoot(page, "en-expired")


def test_too_many_attempts_is_a_calm_notice_that_keeps_the_number(portal, open_page):
    page = open_page(SCREENS[0], "ru")
    for i in range(6):  # limit_per_device: 5 per minute
        start_once = f"+7 916 555-00-0{i}"
        page.goto(portal.url + "/")
        page.get_by_label(PHONE_FIELD["ru"]).fill(start_once)
        page.get_by_label(TERMS_BOX["ru"]).check()
        page.get_by_role("button", name=MAIN_BUTTON["ru"]).click()
        page.wait_for_load_state()
    notice = page.locator("#notice")
    assert re.fullmatch(r"С этого устройства было много попыток\. "
                        r"Попробовать снова можно через 1 минуту\.", notice.inner_text())
    assert above_the_fold(page, notice)
    assert page.get_by_label(PHONE_FIELD["ru"]).input_value() == "+7 916 555-00-05"
    assert page.get_by_label(PHONE_FIELD["ru"]).get_attribute("aria-invalid") is None
    assert small_targets(page) == []
    shoot(page, "ru-too-many-attempts")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_venue_page(portal, open_page, lang):
    page = open_page(SCREENS[0], lang)
    page.goto(portal.url + "/")
    page.locator("footer a").click()
    page.wait_for_url(re.compile(r"/venue$"))
    page.wait_for_load_state()  # its style sheet too, before measuring the links
    assert page.get_by_text(TERMS_LINE[lang]).first.is_visible()
    assert page.locator("h1").inner_text() == NAME[lang]
    assert_one_language(page, lang)
    assert small_targets(page) == []
