"""The settings page: validated, stored over the file's values, applied without a restart."""

import io

from sqlalchemy import select

from admin_support import admin, audit_rows, settings_form, stored_settings  # noqa: F401
from conftest import GUEST_MAC
from portal import audit, storage

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def test_venue_name_and_session_length_reach_guests_without_restart(app, admin, guest, firewall):
    assert "Café Fox" not in guest.client.get("/").get_data(as_text=True)
    saved = admin.post("/admin/settings", settings_form(
        app, **{"venue.name.en": "Café Fox", "portal.session_minutes": "90"}))
    assert saved.status_code == 303
    assert "Saved." in admin.get("/admin/settings").get_data(as_text=True)

    assert "Café Fox" in guest.client.get("/").get_data(as_text=True)
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    assert ("allow", GUEST_MAC, 90 * 60) in firewall.calls
    online = guest.client.get("/").get_data(as_text=True)
    assert "89 more minutes" in online or "90 more minutes" in online

    assert stored_settings(app) == {"venue.name": "Café Fox", "portal.session_minutes": 90}
    [entry] = [r for r in audit_rows(app) if r.action == "settings"]
    assert entry.admin == "boss" and entry.remote_addr == "127.0.0.1"
    assert audit.data_of(entry) == {"changed": ["portal.session_minutes", "venue.name"]}
    # The audit page names the fields as the settings page does, in the admin's language.
    assert "Session length, minutes, Venue name" in admin.get("/admin/audit").get_data(as_text=True)
    ukrainian = admin.get("/admin/audit?lang=uk").get_data(as_text=True)
    assert "Назва закладу" in ukrainian and "venue.name" not in ukrainian


def test_bad_input_is_named_per_field_and_nothing_is_saved(app, admin):
    typed = {"venue.name.en": "   ", "portal.session_minutes": "ninety",
             "portal.verification_minutes": "0", "portal.default_region": "XX",
             "venue.terms_url": "javascript:alert(1)", "gateway.garden": "10.0.0.1/8\nexample.com",
             "provider.base_url": "smsc.ru", "venue.languages": [],
             "venue.welcome.en": "Welcome to <b>the bar</b>"}
    page = admin.post("/admin/settings", settings_form(app, **typed))
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "Nothing was saved" in html
    for key, words in [
            ("venue.name.en", "This cannot be empty."),
            ("portal.session_minutes", "Enter a whole number from 1 to 44640."),
            ("portal.verification_minutes", "Enter a whole number from 1 to 60."),
            ("portal.default_region", "Enter a two-letter country code"),
            ("venue.terms_url", "Enter a full address starting with https://"),
            ("gateway.garden", "“10.0.0.1/8” has host bits set; did you mean 10.0.0.0/8?"),
            ("provider.base_url", "Enter a full address starting with https://"),
            ("venue.languages", "Offer at least one language.")]:
        assert f'id="{key}-error" role="alert">{words}' in html, key
    # What was typed is kept (escaped), so the admin only fixes the wrong fields.
    assert "Welcome to &lt;b&gt;the bar&lt;/b&gt;" in html and "<b>the bar" not in html
    assert 'value="ninety"' in html
    assert stored_settings(app) == {}
    assert [r.action for r in audit_rows(app)] == ["login"]


def guest_page(app, lang, path="/"):
    """A guest's page in lang (by the browser's Accept-Language)."""
    return app.test_client().get(path, headers={"Accept-Language": lang}).get_data(as_text=True)


def test_venue_texts_per_language_with_the_default_language_as_fallback(app, admin):
    form = settings_form(app, **{
        "venue.name.en": "Fox Café", "venue.name.ru": "Кафе «Лис»",
        "venue.welcome.en": "Welcome!", "venue.welcome.uk": "Ласкаво просимо!",
        "venue.terms_text.ru": "Не нарушайте закон.", "venue.terms_url": ""})
    assert set(form) >= {f"venue.{key}.{lang}" for key in ("name", "welcome", "terms_text")
                         for lang in ("ru", "uk", "en")}  # a field per offered language
    assert admin.post("/admin/settings", form).status_code == 303
    assert stored_settings(app) == {
        "venue.name": {"ru": "Кафе «Лис»", "en": "Fox Café"},
        "venue.welcome": {"uk": "Ласкаво просимо!", "en": "Welcome!"},
        "venue.terms_text": {"ru": "Не нарушайте закон."}}

    russian = guest_page(app, "ru")  # its own name; no Russian welcome: the default's (en)
    assert "Кафе «Лис»" in russian and "Fox Café" not in russian
    assert '<p class="welcome venue-text" lang="en">Welcome!</p>' in russian
    assert "Не нарушайте закон." in russian
    ukrainian = guest_page(app, "uk")  # no Ukrainian name: the default's
    assert "Fox Café" in ukrainian and "Ласкаво просимо!" in ukrainian
    assert "Welcome!" not in ukrainian
    english = guest_page(app, "en", "/venue")
    assert "Fox Café" in english and "Welcome!" in english
    assert "Не нарушайте" not in english and 'id="terms"' not in english  # no text: nothing

    page = admin.get("/admin/settings").get_data(as_text=True)
    assert 'name="venue.welcome.uk" lang="uk" rows="3"' in page and "Ласкаво просимо!" in page
    assert admin.post("/admin/settings", settings_form(app)).status_code == 303
    assert "Nothing was changed." in admin.get("/admin/settings").get_data(as_text=True)


def test_a_single_text_is_the_default_languages(app, admin):
    assert admin.post("/admin/settings", settings_form(
        app, **{"venue.welcome.en": "Welcome!"})).status_code == 303
    assert stored_settings(app) == {"venue.welcome": "Welcome!"}  # as before texts per language
    assert "Welcome!" in guest_page(app, "ru")
    # Another default language: the text stays English, and the new default needs a name.
    moved = admin.post("/admin/settings", settings_form(
        app, **{"venue.default_language": "ru", "venue.name.ru": ""}))
    assert moved.status_code == 400
    assert 'id="venue.name.ru-error" role="alert">This cannot be empty.' in moved.get_data(
        as_text=True)
    assert admin.post("/admin/settings", settings_form(
        app, **{"venue.default_language": "ru", "venue.name.ru": "Кафе"})).status_code == 303
    assert stored_settings(app)["venue.welcome"] == {"en": "Welcome!"}
    assert stored_settings(app)["venue.name"] == {"ru": "Кафе", "en": "Free Wi-Fi"}
    assert "Welcome!" in guest_page(app, "en") and "Welcome!" not in guest_page(app, "uk")


def test_rules_across_fields(app, admin):
    page = admin.post("/admin/settings", settings_form(
        app, **{"venue.languages": ["uk", "en"], "venue.default_language": "ru",
                "venue.require_terms": "1", "venue.terms_text": "", "venue.terms_url": "",
                "provider.login": "", "provider.password.clear": "1"}))
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "Pick one of the languages offered." in html
    assert "Add the terms (text or link) before asking guests to accept them." in html
    assert "Enter the provider login and password, or an API key." in html
    assert stored_settings(app) == {}


def test_provider_secrets_are_never_shown_and_an_empty_field_keeps_them(app, admin):
    saved = admin.post("/admin/settings", settings_form(
        app, **{"provider.password": "s3cret-new-password", "provider.apikey": ""}))
    assert saved.status_code == 303
    assert stored_settings(app) == {"provider.password": "s3cret-new-password"}
    page = admin.get("/admin/settings").get_data(as_text=True)
    assert "s3cret-new-password" not in page
    assert "stored — leave empty to keep" in page

    assert admin.post("/admin/settings", settings_form(app)).status_code == 303  # empty: kept
    assert stored_settings(app)["provider.password"] == "s3cret-new-password"

    admin.post("/admin/settings", settings_form(app, **{"provider.apikey": "key-0123456789"}))
    admin.post("/admin/settings", settings_form(app, **{"provider.apikey.clear": "1"}))
    assert stored_settings(app)["provider.apikey"] == ""
    details = " ".join(r.detail for r in audit_rows(app))
    assert "provider.password" in details and "provider.apikey" in details
    assert "s3cret" not in details and "key-0123456789" not in details


def test_logo_must_be_png_or_jpeg_and_small(app, admin, guest):
    def upload(data, name="logo.png"):
        form = settings_form(app)
        form["logo"] = (io.BytesIO(data), name)
        return admin.post("/admin/settings", form, content_type="multipart/form-data")

    gif = upload(b"GIF89a" + b"\x00" * 64, "logo.png")
    assert gif.status_code == 400
    assert "The logo must be a PNG or JPEG image." in gif.get_data(as_text=True)
    huge = upload(PNG + b"\x00" * 210 * 1024)
    assert huge.status_code == 400
    assert "The logo must be at most 200 KB." in huge.get_data(as_text=True)
    with app.extensions["callpass"].engine.connect() as conn:
        assert conn.execute(select(storage.asset)).all() == []

    assert upload(JPEG, "logo.jpg").status_code == 303
    with admin.get("/admin/logo") as logo:
        assert logo.mimetype == "image/jpeg" and logo.data == JPEG
    assert upload(PNG).status_code == 303
    with admin.get("/admin/logo") as logo:
        assert logo.mimetype == "image/png"

    form = settings_form(app, **{"logo.remove": "1"})
    assert admin.post("/admin/settings", form).status_code == 303
    assert admin.get("/admin/logo").status_code == 404
    actions = [(r.action, audit.data_of(r)) for r in audit_rows(app)]
    assert actions.count(("settings", {"changed": ["venue.logo"]})) == 3


def test_walled_garden_entries_are_pushed_to_the_firewall(app, admin, firewall):
    saved = admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": "203.0.113.0/24\n198.51.100.7\n203.0.113.0/24"}))
    assert saved.status_code == 303
    assert stored_settings(app)["gateway.garden"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert [c for c in firewall.calls if c[0] == "garden"] == [
        ("garden", "add", "203.0.113.0/24"), ("garden", "add", "198.51.100.7/32")]

    admin.post("/admin/settings", settings_form(app, **{"gateway.garden": "198.51.100.7/32"}))
    assert [c for c in firewall.calls if c[0] == "garden"][-1] == ("garden", "del",
                                                                   "203.0.113.0/24")
    refused = admin.post("/admin/settings", settings_form(app, **{"gateway.garden": "0.0.0.0/0"}))
    assert "“0.0.0.0/0” is too wide" in refused.get_data(as_text=True)


def test_saving_without_changes_records_nothing(app, admin):
    assert admin.post("/admin/settings", settings_form(app)).status_code == 303
    assert "Nothing was changed." in admin.get("/admin/settings").get_data(as_text=True)
    assert stored_settings(app) == {}
    assert [r.action for r in audit_rows(app)] == ["login"]
