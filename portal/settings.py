"""Effective settings: the config file's values with the admin's changes (stored in the database)
laid over them. Views read `current()` so a change on the admin page applies without a restart.

`parse_form` checks what the admin typed, key by key; nothing is stored unless every key is valid.
Its messages are English msgids (marked with N_) with parameters; the admin page translates them.
"""

import copy
import ipaddress
import json
import os
import time
from urllib.parse import urlsplit

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import services, storage
from .catalog import N_
from .config import LANGUAGES
from .firewall import FirewallError
from .storage import asset, setting, utcnow

# The keys an admin may change on the settings page (secrets are write-only there).
EDITABLE = (
    "venue.name", "venue.welcome", "venue.terms_text", "venue.terms_url", "venue.require_terms",
    "venue.languages", "venue.default_language",
    "portal.default_region", "portal.session_minutes", "portal.verification_minutes",
    "portal.devices_per_phone", "portal.remember_days",
    "provider.base_url", "provider.fallback_urls", "provider.login", "provider.password",
    "provider.apikey", "gateway.garden",
)
SECRETS = ("provider.password", "provider.apikey")


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


CACHE_SECONDS = 2.0  # another process's (or node's) admin change applies within this long


def current():
    """Effective settings of the running app (read only), loaded at most every CACHE_SECONDS:
    guest requests must not query every setting each time. save() here clears it at once."""
    svc = services()
    cached = svc.cache.get("settings")
    if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
        cached = (time.monotonic(), load(svc))
        svc.cache["settings"] = cached
    return cached[1]



def effective_venue():
    """The [venue] settings in force (the file's values if the database cannot be read)."""
    try:
        return current()["venue"]
    except SQLAlchemyError:
        return services().config["venue"]

def save(svc, changes, admin):
    """Store overrides {"section.key": value}; values must already be validated."""
    now = utcnow()
    with storage.begin(svc.engine) as conn:
        for key, value in changes.items():
            if key not in EDITABLE:
                raise KeyError(key)
            conn.execute(setting.delete().where(setting.c.key == key))
            conn.execute(setting.insert().values(key=key, value=json.dumps(value),
                                                 updated_at=now, updated_by=admin))
    svc.cache.pop("settings", None)


def has_logo(svc):
    """Whether there is a logo to show (without reading its bytes: every guest page asks)."""
    with svc.engine.connect() as conn:
        if conn.execute(select(asset.c.name).where(asset.c.name == "logo")).first() is not None:
            return True
    path = svc.config["venue"]["logo"]
    return bool(path) and os.path.isfile(path)


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
    """The SMSC client for the effective provider settings: the app's own while the admin has
    not changed them, else one built for this request over the same HTTP session (a client is
    only its settings; the session holds the connections)."""
    from .provider import SmscClient

    svc = services()
    wanted = current()["provider"]
    if wanted == svc.config["provider"]:
        return svc.provider
    return SmscClient.from_config(wanted, session=svc.provider.session)


# --- What the admin may type, key by key -------------------------------------------------------

LOGO_MAX_BYTES = 200 * 1024
LOGO_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
GARDEN_MAX_ENTRIES = 64
# The widest walled-garden network: a /16 is 65,536 addresses, plenty for a payment provider or a
# CDN; anything wider starts to be "the internet" (0.0.0.0/1 + 128.0.0.0/1 is all of it).
GARDEN_WIDEST = {4: 16, 6: 32}
NUMBERS = {  # key -> (lowest, highest)
    "portal.session_minutes": (5, 31 * 24 * 60),   # the firewall script caps an allow at 31 days
    "portal.verification_minutes": (1, 30),
    "portal.devices_per_phone": (0, 50),           # 0: no limit
    "portal.remember_days": (0, 365),              # 0: every visit needs a call
}
TEXTS = {  # key -> (shortest, longest)
    "venue.name": (1, 80),
    "venue.welcome": (0, 1000),
    "venue.terms_text": (0, 10000),
    "provider.login": (0, 100),
}


class Invalid(ValueError):
    """One field's value is not acceptable: a msgid and its parameters."""

    def __init__(self, msgid, **params):
        super().__init__(msgid % params if params else msgid)
        self.msgid = msgid
        self.params = params


def _text(form, key):
    shortest, longest = TEXTS[key]
    value = form.get(key, "").replace("\r\n", "\n").strip()
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise Invalid(N_("Remove the control characters."))
    if len(value) < shortest:
        raise Invalid(N_("This cannot be empty."))
    if len(value) > longest:
        raise Invalid(N_("At most %(n)s characters, please."), n=longest)
    return value


def _number(form, key):
    lowest, highest = NUMBERS[key]
    typed = form.get(key, "").strip()
    try:
        value = int(typed)
    except ValueError:
        value = None
    if value is None or not lowest <= value <= highest:
        raise Invalid(N_("Enter a whole number from %(low)s to %(high)s."), low=lowest, high=highest)
    return value


def check_url(text, *, empty_ok=False):
    """An http(s) URL with a host, as typed (stripped); Invalid otherwise."""
    text = text.strip()
    if not text and empty_ok:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in text \
            or len(text) > 300:
        raise Invalid(N_("Enter a full address starting with https:// or http://."))
    if parts.username or parts.password:
        raise Invalid(N_("Do not put a login or password into the address."))
    return text


def check_garden_entry(text):
    """A walled-garden address or network in canonical form ("203.0.113.0/24"); Invalid otherwise."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise Invalid(N_("“%(entry)s” is not an IP address or network "
                             "(for example 203.0.113.10 or 203.0.113.0/24)."), entry=text) from None
        raise Invalid(N_("“%(entry)s” has host bits set; did you mean %(network)s?"),
                      entry=text, network=loose.with_prefixlen) from None
    widest = GARDEN_WIDEST[network.version]
    if network.prefixlen < widest:
        raise Invalid(N_("“%(entry)s” is too wide: it would let unverified guests reach a large "
                         "part of the internet. Use networks of /%(v4)s or narrower for IPv4 "
                         "and /%(v6)s or narrower for IPv6."),
                      entry=text, v4=GARDEN_WIDEST[4], v6=GARDEN_WIDEST[6])
    return network.with_prefixlen


def check_garden(entries):
    """The walled garden in canonical form, duplicates dropped; Invalid on the first bad entry
    or when there are more than GARDEN_MAX_ENTRIES. The settings page and the config check
    both use it, so a garden the page refuses cannot come in through the config file."""
    garden = []
    for text in entries:
        entry = check_garden_entry(text)
        if entry not in garden:
            garden.append(entry)
    if len(garden) > GARDEN_MAX_ENTRIES:
        raise Invalid(N_("At most %(n)s entries, please."), n=GARDEN_MAX_ENTRIES)
    return garden


def _lines(form, key):
    return [line.strip() for line in form.get(key, "").splitlines() if line.strip()]


def _garden(form, key):
    return check_garden(_lines(form, key))


def _languages(form, key):
    chosen = [lang for lang in LANGUAGES if lang in form.getlist(key)]
    if not chosen:
        raise Invalid(N_("Offer at least one language."))
    return chosen


def _region(form, key):
    region = form.get(key, "").strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(N_("Enter a two-letter country code such as RU, UA or KZ."))
    return region


def _secret(form, key, effective):
    typed = form.get(key, "")
    if typed.strip():
        if len(typed.strip()) > 200:
            raise Invalid(N_("At most %(n)s characters, please."), n=200)
        return typed.strip()
    if form.get(key + ".clear"):
        return ""
    return effective  # an empty field keeps the stored secret


def parse_form(form, effective):
    """({key: new value} for the keys that change, {key: Invalid}) from the settings form.

    effective is the current merged settings (settings.load); form a MultiDict.
    """
    def get(key):
        section, _, name = key.partition(".")
        return effective[section][name]

    readers = {
        "venue.name": _text, "venue.welcome": _text, "venue.terms_text": _text,
        "venue.terms_url": lambda f, k: check_url(f.get(k, ""), empty_ok=True),
        "venue.require_terms": lambda f, k: bool(f.get(k)),
        "venue.languages": _languages,
        "venue.default_language": lambda f, k: f.get(k, ""),
        "portal.default_region": _region,
        "portal.session_minutes": _number, "portal.verification_minutes": _number,
        "portal.devices_per_phone": _number, "portal.remember_days": _number,
        "provider.base_url": lambda f, k: check_url(f.get(k, "")),
        "provider.fallback_urls": lambda f, k: [check_url(line) for line in _lines(f, k)],
        "provider.login": _text,
        "provider.password": lambda f, k: _secret(f, k, get(k)),
        "provider.apikey": lambda f, k: _secret(f, k, get(k)),
        "gateway.garden": _garden,
    }
    values, errors = {}, {}
    for key, read in readers.items():
        try:
            values[key] = read(form, key)
        except Invalid as exc:
            errors[key] = exc
    # Rules across keys, reported on the field the admin has to change.
    languages = values.get("venue.languages", get("venue.languages"))
    if "venue.default_language" not in errors and values["venue.default_language"] not in languages:
        errors["venue.default_language"] = Invalid(N_("Pick one of the languages offered."))
    if values.get("venue.require_terms") and not (values.get("venue.terms_text")
                                                  or values.get("venue.terms_url")):
        errors["venue.require_terms"] = Invalid(
            N_("Add the terms (text or link) before asking guests to accept them."))
    if not any(key in errors for key in ("provider.login", "provider.password", "provider.apikey")):
        if not values["provider.apikey"] and not (values["provider.login"]
                                                  and values["provider.password"]):
            errors["provider.login"] = Invalid(
                N_("Enter the provider login and password, or an API key."))
    # A stored secret is write-only: it goes only to the addresses it was entered for, so a new
    # provider address needs each stored secret typed again (or removed) on the same form.
    new_addresses = _new_addresses(values, effective, errors)
    for key in SECRETS:
        is_kept = key not in errors and values[key] and not form.get(key, "").strip()
        if new_addresses and is_kept:
            errors[key] = Invalid(N_("The provider address is new (%(address)s): enter this "
                                     "again, or remove it. A stored secret is never sent to a "
                                     "new address."), address=new_addresses[0])
    if errors:
        return {}, errors
    if set(values["venue.languages"]) == set(get("venue.languages")):
        values["venue.languages"] = get("venue.languages")  # same choice: keep the configured order
    return {key: value for key, value in values.items() if value != get(key)}, {}


def _addresses(base_url, fallback_urls):
    """The provider URLs credentials are sent to, without a trailing slash."""
    return [url.rstrip("/") for url in [base_url, *fallback_urls]]


def _new_addresses(values, effective, errors):
    """Provider URLs in the form that the effective settings do not have (none when the
    address fields have errors of their own)."""
    if "provider.base_url" in errors or "provider.fallback_urls" in errors:
        return []
    known = _addresses(effective["provider"]["base_url"], effective["provider"]["fallback_urls"])
    typed = _addresses(values["provider.base_url"], values["provider.fallback_urls"])
    return [url for url in typed if url not in known]


def check_logo(data):
    """The content type of an uploaded logo (PNG or JPEG by its first bytes); Invalid otherwise."""
    if len(data) > LOGO_MAX_BYTES:
        raise Invalid(N_("The logo must be at most %(kb)s KB."), kb=LOGO_MAX_BYTES // 1024)
    for magic, content_type in LOGO_TYPES:
        if data.startswith(magic):
            return content_type
    raise Invalid(N_("The logo must be a PNG or JPEG image."))


def save_logo(svc, data, content_type):
    """Store an uploaded logo (checked by check_logo); it replaces the previous one."""
    with storage.begin(svc.engine) as conn:
        conn.execute(asset.delete().where(asset.c.name == "logo"))
        conn.execute(asset.insert().values(name="logo", content_type=content_type, data=data,
                                           updated_at=utcnow()))


def remove_logo(svc):
    """Forget the uploaded logo (the config's venue.logo file, if any, shows again)."""
    with storage.begin(svc.engine) as conn:
        conn.execute(asset.delete().where(asset.c.name == "logo"))


def push_garden(firewall, old, new):
    """Tell the firewall the walled-garden entries that went away and the new ones.

    Returns the firewall's error messages (empty when it took everything).
    """
    failures = []
    for action, entries in (("del", [e for e in old if e not in new]),
                            ("add", [e for e in new if e not in old])):
        for entry in entries:
            try:
                firewall.garden(action, entry)
            except (FirewallError, ValueError) as exc:
                failures.append(str(exc))
    return failures


def sync_garden(svc):
    """Add every stored walled-garden entry to the firewall (after `callpass-fw up` at boot).

    An entry an older version accepted but check_garden_entry now refuses (too wide) is taken
    out of the firewall instead (`up` keeps the garden), and reported with the failures.
    """
    garden, refused, failures = [], [], []
    for entry in load(svc)["gateway"]["garden"]:
        try:
            garden.append(check_garden_entry(entry))
        except Invalid as exc:
            refused.append(entry)
            failures.append(f"removed from the firewall: {exc}")
    return failures + push_garden(svc.firewall, refused, garden)
