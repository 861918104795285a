"""Languages: chosen from the browser, switchable and remembered, complete catalogs, translated errors."""

import ast
import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from portal import settings

ROOT = Path(__file__).resolve().parent.parent
CATALOGS = ROOT / "portal" / "translations"
LANGUAGES = ("ru", "uk")
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")

# A text of the phone form in each language, and the html lang attribute it comes with.
FORM_LABEL = {"ru": "Ваш номер телефона", "uk": "Ваш номер телефону", "en": "Your phone number"}


def language_of(response):
    page = response.get_data(as_text=True)
    found = re.search(r'<html lang="(\w+)">', page)
    return found.group(1) if found else None


def load_po(lang):
    with open(CATALOGS / lang / "LC_MESSAGES" / "messages.po", "rb") as fh:
        return read_po(fh, locale=lang)


@pytest.mark.parametrize("header, expected", [
    ("ru-RU,ru;q=0.9", "ru"),
    ("uk-UA,uk;q=0.9,en;q=0.5", "uk"),
    ("en-US,en;q=0.9", "en"),
    ("en-GB,ru;q=0.8", "en"),      # the guest's first choice wins, whatever its region
    ("de-DE,uk;q=0.7,ru;q=0.5", "uk"),
    ("de-DE,fr;q=0.8", "en"),      # nothing offered: venue.default_language ("en" in tests)
    ("ru;q=0,en;q=0.5", "en"),
])
def test_the_browsers_language_picks_the_page_language(client, header, expected):
    page = client.get("/", headers={"Accept-Language": header})
    assert language_of(page) == expected
    assert FORM_LABEL[expected] in page.get_data(as_text=True)
    assert "Accept-Language" in page.headers["Vary"]


def test_lang_switches_and_is_remembered(client):
    switched = client.get("/?lang=uk", headers={"Accept-Language": "ru"})
    assert language_of(switched) == "uk"
    cookie = switched.headers["Set-Cookie"]
    assert cookie.startswith("lang=uk;")
    assert "Max-Age=31536000" in cookie and "SameSite=Lax" in cookie and "HttpOnly" in cookie

    assert language_of(client.get("/", headers={"Accept-Language": "ru"})) == "uk"
    assert language_of(client.get("/nope", headers={"Accept-Language": "ru"})) == "uk"
    assert language_of(client.get("/?lang=en")) == "en"
    assert language_of(client.get("/", headers={"Accept-Language": "ru"})) == "en"


def test_every_page_offers_the_switch_keeping_its_address(client):
    page = client.get("/venue?lang=ru").get_data(as_text=True)
    for code, name in (("ru", "Русский"), ("uk", "Українська"), ("en", "English")):
        assert f'<a href="/venue?lang={code}" lang="{code}" hreflang="{code}"' in page
        assert name in page
    assert 'href="/venue?lang=ru" lang="ru" hreflang="ru" aria-current="true"' in page


def test_only_the_venues_languages_are_offered(app, client):
    svc = app.extensions["callpass"]
    settings.save(svc, {"venue.languages": ["ru", "en"], "venue.default_language": "ru"}, "test")
    assert language_of(client.get("/", headers={"Accept-Language": "uk"})) == "ru"
    assert language_of(client.get("/?lang=uk")) == "ru"
    assert "Set-Cookie" not in client.get("/?lang=uk").headers
    page = client.get("/").get_data(as_text=True)
    assert "?lang=en" in page and "?lang=uk" not in page
    client.set_cookie("lang", "uk")
    assert language_of(client.get("/")) == "ru"


def test_a_single_language_shows_no_switch(app, client):
    settings.save(app.extensions["callpass"], {"venue.languages": ["uk"],
                                               "venue.default_language": "uk"}, "test")
    page = client.get("/", headers={"Accept-Language": "en"})
    assert language_of(page) == "uk"
    assert 'class="langs"' not in page.get_data(as_text=True)


def test_form_errors_and_provider_messages_are_translated(guest, simulator):
    guest.client.set_cookie("lang", "ru")
    page = guest.start("")
    assert page.status_code == 400
    assert "Введите номер телефона." in page.get_data(as_text=True)
    # The example is the venue region's (RU by default) and uses the characters it allows.
    assert ("Наберите номер цифрами; пробелы, дефисы, скобки и знак + можно, "
            "например +7 912 345-67-89.") in guest.start("hello").get_data(as_text=True)

    guest.client.set_cookie("lang", "uk")
    simulator.state.set_knobs(error_code=2)
    refused = guest.start("+79161234567")
    assert refused.status_code == 503
    assert "Будь ласка, повідомте персонал." in refused.get_data(as_text=True)


@pytest.mark.parametrize("lang, words", [
    ("ru", "Такой страницы нет."), ("uk", "Такої сторінки немає."), ("en", "This page does not exist."),
])
def test_error_pages_are_translated(client, lang, words):
    page = client.get("/wait/no-such-token", headers={"Accept-Language": lang})
    assert page.status_code == 404
    assert language_of(page) == lang and words in page.get_data(as_text=True)


def test_the_429_page_is_translated(guest):
    guest.client.set_cookie("lang", "uk")
    codes = [guest.start(f"+7916123456{i}") for i in range(6)]
    assert [c.status_code for c in codes[:5]] == [303] * 5
    assert codes[5].status_code == 429
    page = codes[5].get_data(as_text=True)
    assert language_of(codes[5]) == "uk"
    # A calm notice with the real wait (the limit is 5 per minute), the number still typed.
    assert "Спробувати знову можна через 1 хвилину." in page
    assert 'value="+79161234565"' in page
    assert 'aria-invalid' not in page


def test_not_on_the_lan_is_translated(make_guest):
    stranger = make_guest("192.0.2.10", None)
    stranger.client.set_cookie("lang", "ru")
    page = stranger.start("+79161234567")
    assert page.status_code == 403
    assert "Сначала подключитесь к Wi-Fi" in page.get_data(as_text=True)
    assert "192.0.2.10" in page.get_data(as_text=True)


def test_time_left_is_said_as_people_say_it(guest):
    """240 minutes left: "until HH:MM, about 4 hours", plurals by each language's rules."""
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    guest.client.set_cookie("lang", "ru")
    page = guest.client.get("/").get_data(as_text=True)
    assert re.search(r"работает до \d\d:\d\d, ещё около 4 часов\.", page)
    guest.client.set_cookie("lang", "uk")
    page = guest.client.get("/").get_data(as_text=True)
    assert re.search(r"працює до \d\d:\d\d, ще близько 4 годин\.", page)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_has_a_translation_with_the_same_placeholders(lang):
    catalog = load_po(lang)
    assert catalog.plural_forms.startswith("nplurals=3;")
    ids = [m for m in catalog if m.id]
    assert len(ids) > 40
    for message in ids:
        originals = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(s.strip() for s in strings), f"{lang}: {originals[0]!r} is not translated"
        assert "fuzzy" not in message.flags, f"{lang}: {originals[0]!r} is fuzzy"
        wanted = set(PLACEHOLDER.findall(" ".join(originals)))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, f"{lang}: {string!r}"
            assert string.count("<strong>") == originals[0].count("<strong>")


def test_the_catalog_holds_every_text_the_code_marks():
    with open(ROOT / "babel.cfg", encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = dict(DEFAULT_KEYWORDS, lazy_gettext=None, N_=None)
    marked = {msgid if isinstance(msgid, str) else msgid[0]
              for _file, _line, msgid, _comments, _context in
              extract_from_dir(ROOT, method_map, options_map, keywords=keywords)}
    assert len(marked) > 40
    for lang in LANGUAGES:
        known = {m.id if isinstance(m.id, str) else m.id[0] for m in load_po(lang) if m.id}
        assert marked - known == set(), f"{lang}: run the pybabel commands in babel.cfg"


def test_every_phone_reason_is_marked_for_translation():
    """phone.py's reasons are marked where they are written, and every language has them."""
    tree = ast.parse((ROOT / "portal" / "phone.py").read_text(encoding="utf-8"))
    reasons = [node.args[0] for node in ast.walk(tree)
               if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "InvalidPhone"]
    assert len(reasons) == 5
    assert all(isinstance(arg, ast.Call) and arg.func.id == "N_" for arg in reasons)
    for lang in LANGUAGES:
        known = {m.id for m in load_po(lang) if m.id and m.string}
        assert {arg.args[0].value for arg in reasons} <= known, lang


@pytest.mark.parametrize("lang", LANGUAGES)
def test_compiled_catalogs_match_their_sources(lang):
    mo_path = CATALOGS / lang / "LC_MESSAGES" / "messages.mo"
    assert mo_path.exists(), "catalogs are compiled at install: pip install -e . (or python hatch_build.py)"
    def entries(catalog):
        return {tuple(m.id) if isinstance(m.id, (list, tuple)) else m.id:
                tuple(m.string) if isinstance(m.string, (list, tuple)) else m.string
                for m in catalog if m.id}

    with open(mo_path, "rb") as fh:
        compiled = entries(read_mo(fh))
    source = entries(load_po(lang))
    assert compiled == source, "stale .mo: pip install -e . (or python hatch_build.py)"
