"""Provider secrets are write-only: changing the provider's address on the settings page never
sends the stored password or API key to the new address; the admin types them again."""

import pytest
from flask import request

from admin_support import admin, audit_rows, settings_form, stored_settings  # noqa: F401
from portal import settings
from portal.simulator import SimulatorServer

OLD_PASSWORD = "pw"  # the config's provider.password (conftest)
NEW_PASSWORD = "a-new-provider-password"
NEW_KEY_ERROR = ("The provider address is new ({url}): enter this again, or remove it. A stored "
                 "secret is never sent to a new address.")


@pytest.fixture
def new_provider():
    """A second simulator at another address; `seen` holds the form of every request it got."""
    server = SimulatorServer(callback_url="http://127.0.0.1:9/unset", login="venue",
                             password=NEW_PASSWORD)
    server.seen = []

    @server.app.before_request
    def record():
        server.seen.append(request.values.to_dict())

    server.start()
    yield server
    server.stop()


def ask_the_provider(app, admin):
    """Everything that talks to the provider with the effective settings: /healthz, the
    dashboard's balance, a guest's verification. Returns the /healthz answer."""
    svc = app.extensions["callpass"]
    svc.cache.pop("provider_status", None)
    health = app.test_client().get("/healthz").get_json()
    svc.cache.pop("provider_status", None)
    admin.get("/admin/")
    return health


@pytest.mark.parametrize("address_field", ["provider.base_url", "provider.fallback_urls"])
def test_a_new_address_without_the_password_is_refused_and_gets_nothing(
        app, admin, guest, simulator, new_provider, address_field):
    page = admin.post("/admin/settings", settings_form(
        app, **{address_field: new_provider.url, "venue.name.en": "Café Fox"}))
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "Nothing was saved" in html
    assert ('id="provider.password-error" role="alert">'
            + NEW_KEY_ERROR.format(url=new_provider.url)) in html
    assert 'id="provider.apikey-error"' not in html  # no API key is stored: nothing to retype
    assert stored_settings(app) == {}

    health = ask_the_provider(app, admin)
    assert health["provider"]["ok"]  # still the old provider, with the old password
    assert guest.start("+79161234567").status_code == 303
    assert new_provider.seen == []
    assert [r.action for r in audit_rows(app)] == ["login"]


def test_the_new_address_gets_only_the_password_typed_with_it(app, admin, new_provider):
    saved = admin.post("/admin/settings", settings_form(
        app, **{"provider.base_url": new_provider.url, "provider.password": NEW_PASSWORD}))
    assert saved.status_code == 303
    assert stored_settings(app) == {"provider.base_url": new_provider.url,
                                    "provider.password": NEW_PASSWORD}

    health = ask_the_provider(app, admin)
    assert health["provider"] == {"ok": True, "balance": "250.80"}
    assert new_provider.seen  # the new address is used …
    assert {form["psw"] for form in new_provider.seen} == {NEW_PASSWORD}  # … with the new password
    assert not any(OLD_PASSWORD in form.values() for form in new_provider.seen)

    # Later saves at the same address keep the stored password without asking again.
    assert admin.post("/admin/settings", settings_form(
        app, **{"venue.name.en": "Café Fox"})).status_code == 303


def test_every_stored_secret_must_be_typed_again_or_removed(app, admin, new_provider):
    svc = app.extensions["callpass"]
    settings.save(svc, {"provider.apikey": "old-api-key-0123456789"}, "boss")
    page = admin.post("/admin/settings", settings_form(
        app, **{"provider.base_url": new_provider.url + "/", "provider.password": NEW_PASSWORD}))
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert ('id="provider.apikey-error" role="alert">'
            + NEW_KEY_ERROR.format(url=new_provider.url)) in html
    assert 'id="provider.password-error"' not in html
    assert "old-api-key-0123456789" not in html and NEW_PASSWORD not in html
    assert stored_settings(app) == {"provider.apikey": "old-api-key-0123456789"}

    removed = admin.post("/admin/settings", settings_form(
        app, **{"provider.base_url": new_provider.url, "provider.password": NEW_PASSWORD,
                "provider.apikey.clear": "1"}))
    assert removed.status_code == 303
    ask_the_provider(app, admin)
    assert new_provider.seen and all("apikey" not in form for form in new_provider.seen)
