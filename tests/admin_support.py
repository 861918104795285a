"""Helpers for the admin tests: a signed-in admin driving /admin with the Flask test client."""

import json
import re

import pytest
from serve_support import write_config
from sqlalchemy import select

from portal import auth, settings, storage

ADMIN_NAME = "boss"
ADMIN_PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client, url="/admin/login"):
    """The CSRF token of the form on url (as a browser would find it)."""
    page = client.get(url)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {url} ({page.status_code})"
    return found[1]


def sign_in(client, name=ADMIN_NAME, password=ADMIN_PASSWORD):
    """Submit the login form; returns the response."""
    return client.post("/admin/login", data={"name": name, "password": password,
                                             "csrf_token": csrf_token(client)})


def command_config(tmp_path, app, sections=None):
    """A config file for the commands (`callpass admin …`, `purge`, `check-config`) pointing at
    the app's database; returns its path as a string."""
    database = app.extensions["callpass"].engine.url.render_as_string(hide_password=False)
    return str(write_config(tmp_path / "callpass.toml", database=database, firewall="noop",
                            sections=sections))


class Admin:
    """A signed-in admin's browser: post() adds the CSRF token of the page it came from."""

    def __init__(self, client):
        self.client = client

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, page=None, **kw):
        data = dict(data or {})
        data.setdefault("csrf_token", csrf_token(self.client, page or url))
        return self.client.post(url, data=data, **kw)


@pytest.fixture
def admin(app):
    """An admin account, signed in on its own test client."""
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)
    client = app.test_client()
    assert sign_in(client).status_code == 303
    return Admin(client)


def settings_form(app, **changes):
    """The settings form as the page fills it (current values), with changes
    ({"venue.name.en": …}: a venue text has a field per offered language)."""
    svc = app.extensions["callpass"]
    effective = settings.load(svc)
    form = {}
    for key in settings.EDITABLE:
        section, _, name = key.partition(".")
        value = effective[section][name]
        if key in settings.PER_LANGUAGE:  # a field per offered language: venue.name.en, …
            default = effective["venue"]["default_language"]
            texts = settings.as_texts(value, default)
            for lang in settings.LANGUAGES:
                if lang in effective["venue"]["languages"] or lang == default:
                    form[f"{key}.{lang}"] = texts.get(lang, "")
            continue
        if key in settings.SECRETS:
            value = ""
        elif isinstance(value, bool):
            value = "1" if value else ""
        elif isinstance(value, list) and key != "venue.languages":
            value = "\n".join(value)
        elif isinstance(value, int):
            value = str(value)
        form[key] = value
    form.update(changes)
    return form


def venue_settings_form(app, **changes):
    """The settings form of one venue as the page fills it (/admin/settings?venue=…: a venue's
    keys only), with changes."""
    form = {key: value for key, value in settings_form(app).items()
            if key in settings.VENUE_CHAIN_KEYS or key.rsplit(".", 1)[0] in settings.PER_LANGUAGE}
    form.update(changes)
    return form


def stored_settings(app):
    """{key: value} of the overrides in the setting table."""
    with app.extensions["callpass"].engine.connect() as conn:
        return {row.key: json.loads(row.value)
                for row in conn.execute(select(storage.setting)).all()}


def audit_rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.audit).order_by(storage.audit.c.id)).all()
