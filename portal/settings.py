"""Effective settings: the config file's values with the admin's changes (stored in the database)
laid over them. Views read `current()` so a change on the admin page applies without a restart.
"""

import copy
import json

from flask import g, has_request_context
from sqlalchemy import select

from . import services
from .storage import asset, setting, utcnow

# The keys an admin may change on the settings page (secrets are write-only there).
EDITABLE = (
    "venue.name", "venue.welcome", "venue.terms_text", "venue.terms_url", "venue.require_terms",
    "venue.languages", "venue.default_language",
    "portal.default_region", "portal.session_minutes", "portal.verification_minutes",
    "portal.devices_per_phone", "portal.remember_days",
    "provider.base_url", "provider.fallback_urls", "provider.login", "provider.password",
    "provider.apikey",
)


def load(svc):
    """The file config with every stored override applied (a fresh copy)."""
    merged = copy.deepcopy(svc.config)
    with svc.engine.connect() as conn:
        rows = conn.execute(select(setting.c.key, setting.c.value)).all()
    for key, value in rows:
        section, _, name = key.partition(".")
        if key in EDITABLE and section in merged and name in merged[section]:
            merged[section][name] = json.loads(value)
    return merged


def current():
    """Effective settings of the running app, read once per request."""
    if not has_request_context():
        return load(services())
    if "callpass_settings" not in g:
        g.callpass_settings = load(services())
    return g.callpass_settings


def save(svc, changes, admin):
    """Store overrides {"section.key": value}; values must already be validated."""
    now = utcnow()
    with svc.engine.begin() as conn:
        for key, value in changes.items():
            if key not in EDITABLE:
                raise KeyError(key)
            conn.execute(setting.delete().where(setting.c.key == key))
            conn.execute(setting.insert().values(key=key, value=json.dumps(value),
                                                 updated_at=now, updated_by=admin))


def logo(svc):
    """(bytes, content type) of the venue logo — uploaded one first, else venue.logo file — or None."""
    with svc.engine.connect() as conn:
        row = conn.execute(select(asset).where(asset.c.name == "logo")).first()
    if row is not None:
        return row.data, row.content_type
    path = svc.config["venue"]["logo"]
    if not path:
        return None
    kind = "image/png" if path.lower().endswith(".png") else "image/jpeg"
    try:
        with open(path, "rb") as fh:
            return fh.read(), kind
    except OSError:
        return None


def provider():
    """The SMSC client for the effective provider settings (rebuilt when the admin changed them)."""
    from .provider import SmscClient

    svc = services()
    wanted = current()["provider"]
    if wanted == svc.config["provider"]:
        return svc.provider
    key = json.dumps(wanted, sort_keys=True)
    cached = svc.cache.get("provider")
    if cached is None or cached[0] != key:
        if cached is not None:
            cached[1].close()
        cached = (key, SmscClient.from_config(wanted))
        svc.cache["provider"] = cached
    return cached[1]
