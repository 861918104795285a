"""Effective settings: the config file's values with the admin's changes (stored in the database)
laid over them. Views read `current()` so a change on the admin page applies without a restart.

In a chain, the chain's changes (`setting`, also the main venue's) are laid over the file, and a
venue's own changes (`venue_setting`, the keys in VENUE_KEYS) over those. `current()` gives the
settings of the venue the request is about (venues.current()).

`parse_form` checks what the admin typed, key by key; nothing is stored unless every key is valid.
Its messages are English msgids (marked with N_) with parameters; the admin page translates them.
"""

import copy
import functools
import ipaddress
import json
import os
import re
import time
import zoneinfo
from urllib.parse import urlsplit

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import services, storage, venues
from .catalog import N_
from .config import LANGUAGES, MAX_SESSION_MINUTES
from .firewall import FirewallError
from .storage import MAIN_VENUE, asset, setting, utcnow, venue_setting



def load(svc, venue_id=MAIN_VENUE):
    """The file config with every stored override of the chain, then of the venue, applied (a
    fresh copy).

    A venue with a provider account of its own takes none of the chain's provider credentials:
    the chain's API key or password must never reach the venue's provider, nor ride along with
    the venue's login. (save() stores a venue's whole provider block at once, its address too.)
    """
    merged = copy.deepcopy(svc.config)
    with svc.engine.connect() as conn:
        rows = conn.execute(select(setting.c.key, setting.c.value)).all()
        venue_rows = []
        if venue_id != MAIN_VENUE:
            venue_rows = conn.execute(select(venue_setting.c.key, venue_setting.c.value)
                                      .where(venue_setting.c.venue_id == venue_id)).all()
    for key, value in rows + venue_rows:
        section, _, name = key.partition(".")
        if key in EDITABLE and section in merged and name in merged[section]:
            merged[section][name] = json.loads(value)
    own = {key for key, _value in venue_rows}
    if own & set(PROVIDER_KEYS):
        for key in PROVIDER_CREDENTIALS:
            if key not in own:
                merged["provider"][key.partition(".")[2]] = ""
    return merged


CACHE_SECONDS = 2.0  # another process's (or node's) admin change applies within this long


def current(venue_id=None):
    """Effective settings (read only) of venue_id, by default the venue of the running request,
    loaded at most every CACHE_SECONDS: guest requests must not query every setting each time.
    save() here clears them at once."""
    svc = services()
    venue_id = venues.current() if venue_id is None else venue_id
    cache = svc.cache.setdefault("settings", {})
    cached = cache.get(venue_id)
    if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
        if len(cache) > 2000:  # a chain's venues, and no more
            cache.clear()
        cached = (time.monotonic(), load(svc, venue_id))
        cache[venue_id] = cached
    return cached[1]



def effective_venue():
    """The [venue] settings in force (the file's values if the database cannot be read)."""
    try:
        return current()["venue"]
    except SQLAlchemyError:
        return services().config["venue"]


def save(svc, changes, admin, venue_id=MAIN_VENUE):
    """Store overrides {"section.key": value} of the chain (the main venue) or of one venue;
    values must already be validated."""
    if venue_id != MAIN_VENUE and set(changes) & set(PROVIDER_KEYS):
        # A venue's provider is its own as a whole: pinned to the address its secrets were
        # entered for, so a later change of the chain's address or key never reaches it.
        provider = load(svc, venue_id)["provider"]
        changes = {**{key: provider[key.partition(".")[2]] for key in PROVIDER_KEYS}, **changes}
    with storage.begin(svc.engine) as conn:
        now = utcnow()
        for key, value in changes.items():
            if key not in (EDITABLE if venue_id == MAIN_VENUE else VENUE_CHAIN_KEYS):
                raise KeyError(key)
            if venue_id == MAIN_VENUE:
                conn.execute(setting.delete().where(setting.c.key == key))
                conn.execute(setting.insert().values(key=key, value=json.dumps(value),
                                                     updated_at=now, updated_by=admin))
            else:
                conn.execute(venue_setting.delete().where(venue_setting.c.venue_id == venue_id,
                                                          venue_setting.c.key == key))
                conn.execute(venue_setting.insert().values(
                    venue_id=venue_id, key=key, value=json.dumps(value), updated_at=now,
                    updated_by=admin))
    svc.cache.pop("settings", None)


def logo_names(venue_id):
    """The stored logos that may show at a venue, its own first."""
    return ("logo",) if venue_id == MAIN_VENUE else (f"logo:{venue_id}", "logo")


def has_logo(svc, venue_id=MAIN_VENUE):
    """Whether there is a logo to show (without reading its bytes: every guest page asks)."""
    with svc.engine.connect() as conn:
        if conn.execute(select(asset.c.name)
                        .where(asset.c.name.in_(logo_names(venue_id)))).first() is not None:
            return True
    path = svc.config["venue"]["logo"]
    return bool(path) and os.path.isfile(path)


def logo(svc, venue_id=MAIN_VENUE):
    """(bytes, content type) of the venue logo — its own uploaded one, else the chain's, else
    the venue.logo file — or None."""
    with svc.engine.connect() as conn:
        rows = {row.name: row for row in conn.execute(
            select(asset).where(asset.c.name.in_(logo_names(venue_id)))).all()}
    row = next((rows[name] for name in logo_names(venue_id) if name in rows), None)
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


# --- What a setting may be, key by key ----------------------------------------------------------
# RULES is the one definition of each editable key: the settings form reads the admin's text with
# `rule.read(form, key)` and the config check (config.problems) calls `rule.check(value)` on the
# file's value, so a file the portal starts with is always a form the page can save.

LOGO_MAX_BYTES = 200 * 1024
LOGO_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
GARDEN_MAX_ENTRIES = 64
# The widest walled-garden network: a /16 is 65,536 addresses, plenty for a payment provider or a
# CDN; anything wider starts to be "the internet" (0.0.0.0/1 + 128.0.0.0/1 is all of it).
GARDEN_WIDEST = {4: 16, 6: 32}
SECRET_MAX_CHARS = 200


class Invalid(ValueError):
    """One field's value is not acceptable: a msgid and its parameters."""

    def __init__(self, msgid, **params):
        super().__init__(msgid % params if params else msgid)
        self.msgid = msgid
        self.params = params


def _lines(form, key):
    return [line.strip() for line in form.get(key, "").splitlines() if line.strip()]


class Number:
    """A whole number from lowest to highest."""

    def __init__(self, lowest, highest):
        self.lowest, self.highest = lowest, highest

    def check(self, value):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not self.lowest <= value <= self.highest:
            raise Invalid(N_("Enter a whole number from %(low)s to %(high)s."),
                          low=self.lowest, high=self.highest)
        return value

    def read(self, form, key):
        typed = form.get(key, "").strip()
        return self.check(int(typed) if re.fullmatch(r"-?\d{1,9}", typed) else None)


class Text:
    """One text of shortest to longest characters, without control characters but newlines."""

    def __init__(self, shortest, longest):
        self.shortest, self.longest = shortest, longest

    def check(self, value):
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
            raise Invalid(N_("Remove the control characters."))
        if len(value) < self.shortest:
            raise Invalid(N_("This cannot be empty."))
        if len(value) > self.longest:
            raise Invalid(N_("At most %(n)s characters, please."), n=self.longest)
        return value

    def read(self, form, key):
        return self.check(form.get(key, "").replace("\r\n", "\n").strip())


class Texts:
    """A venue text per language: {"ru": …, "en": …} (a language without text is left out). A
    plain string is the default language's text: configs and stored settings from before texts
    per language read on unchanged. The form has one field per language, named key.<lang>."""

    def __init__(self, shortest, longest):
        self.shortest, self.longest = shortest, longest
        self.one = Text(0, longest)  # the default language's text must be there: cross_check

    def check(self, value):
        if isinstance(value, str):
            return self.one.check(value)
        if not isinstance(value, dict):
            raise Invalid(N_("Give one text, or one per language."))
        for lang, text in value.items():
            if lang not in LANGUAGES:
                raise Invalid(N_("“%(lang)s” is not one of %(known)s."), lang=lang,
                              known=", ".join(LANGUAGES))
            if not isinstance(text, str):
                raise Invalid(N_("Give one text, or one per language."))
            self.one.check(text)
        return value

    def read(self, form, key, stored, default_language):
        """({lang: text}, {field: Invalid}): the languages the form has a field for, the stored
        texts of the others (a language no longer offered keeps its text)."""
        texts, errors = as_texts(stored, default_language), {}
        for lang in LANGUAGES:
            field = f"{key}.{lang}"
            if field in form:
                try:
                    texts[lang] = self.one.read(form, field)
                except Invalid as exc:
                    errors[field] = exc
        return {lang: text for lang, text in texts.items() if text}, errors


def as_texts(value, default_language):
    """{lang: text} of a venue text (a plain string is the default language's)."""
    if isinstance(value, dict):
        return {lang: text for lang, text in value.items() if text}
    return {default_language: value} if value else {}


def compact_texts(texts, default_language):
    """How a venue text is stored: a plain string while only the default language has one (as
    before texts per language, so older versions and single-text setups read it), else the dict."""
    if set(texts) <= {default_language}:
        return texts.get(default_language, "")
    return texts


def text_for(venue, name, lang):
    """(text, its language) of venue text name for a page in lang: lang's text, else the default
    language's, else ("", lang)."""
    default = venue["default_language"]
    texts = as_texts(venue[name], default)
    for candidate in (lang, default):
        if texts.get(candidate):
            return texts[candidate], candidate
    return "", lang


class Flag:
    """On or off (a checkbox)."""

    def check(self, value):
        return value

    def read(self, form, key):
        return bool(form.get(key))


class Url:
    """An http(s) address (empty allowed when is_optional)."""

    def __init__(self, is_optional=False):
        self.is_optional = is_optional

    def check(self, value):
        return check_url(value, empty_ok=self.is_optional)

    def read(self, form, key):
        return self.check(form.get(key, "").strip())


class UrlList:
    """http(s) addresses, one per line on the form."""

    def check(self, value):
        return [check_url(url) for url in value]

    def read(self, form, key):
        return self.check(_lines(form, key))


class Languages:
    """One or more of the portal's languages, in the portal's order on the form."""

    def check(self, value):
        for lang in value:
            if lang not in LANGUAGES:
                raise Invalid(N_("“%(lang)s” is not one of %(known)s."), lang=lang,
                              known=", ".join(LANGUAGES))
        if not value:
            raise Invalid(N_("Offer at least one language."))
        return value

    def read(self, form, key):
        return self.check([lang for lang in LANGUAGES if lang in form.getlist(key)])


class Language:
    """One of the portal's languages (whether it is offered is a rule across keys)."""

    def check(self, value):
        if value not in LANGUAGES:
            raise Invalid(N_("Pick one of the languages offered."))
        return value

    def read(self, form, key):
        return self.check(form.get(key, ""))


class Region:
    """A phone-number region code such as RU (typed in any case on the form)."""

    def check(self, value):
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise Invalid(N_("Enter a two-letter country code such as RU, UA or KZ."))
        return value

    def read(self, form, key):
        return self.check(form.get(key, "").strip().upper())


class Secret:
    """A write-only value: an empty field keeps what is stored, its `.clear` box removes it."""

    def check(self, value):
        if len(value) > SECRET_MAX_CHARS:
            raise Invalid(N_("At most %(n)s characters, please."), n=SECRET_MAX_CHARS)
        return value

    def read(self, form, key, stored=""):
        typed = form.get(key, "").strip()
        if typed:
            return self.check(typed)
        if form.get(key + ".clear"):
            return ""
        return stored


class TimeZone:
    """An IANA time zone name ("Europe/Moscow"), or empty for the system's."""

    def check(self, value):
        if value and value not in zone_names():
            raise Invalid(N_("Enter a time zone name such as Europe/Moscow or Europe/Kyiv, or "
                             "leave it empty for the system's (%(zone)s)."),
                          zone=system_timezone())
        return value

    def read(self, form, key):
        return self.check(form.get(key, "").strip())


@functools.cache
def zone_names():
    """The IANA time zone names this system knows (read once: it walks the tz database)."""
    return frozenset(zoneinfo.available_timezones())


def system_timezone():
    """The system's time zone name: $TZ, /etc/timezone or /etc/localtime's target; else "UTC"."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            names.append(fh.read().strip())
    except OSError:
        pass
    names.append(os.path.realpath("/etc/localtime").partition("/zoneinfo/")[2])
    for name in names:
        if name and name in zone_names():
            return name
    return "UTC"


def venue_zone(venue):
    """The ZoneInfo of the venue's time zone setting (the system's when empty)."""
    return zoneinfo.ZoneInfo(venue["timezone"] or system_timezone())


class Garden:
    """Walled-garden addresses and networks, one per line on the form (see check_garden)."""

    def check(self, value):
        return check_garden(value)

    def read(self, form, key):
        return self.check(_lines(form, key))


RULES = {
    "venue.name": Texts(1, 80),
    "venue.welcome": Texts(0, 1000),
    "venue.terms_text": Texts(0, 10000),
    "venue.terms_url": Url(is_optional=True),
    "venue.require_terms": Flag(),
    "venue.languages": Languages(),
    "venue.default_language": Language(),
    "venue.timezone": TimeZone(),
    "portal.default_region": Region(),
    "portal.session_minutes": Number(1, MAX_SESSION_MINUTES),
    "portal.verification_minutes": Number(1, 60),
    "portal.devices_per_phone": Number(0, 50),   # 0: no limit
    "portal.remember_days": Number(0, 365),      # 0: every visit needs a call
    "provider.base_url": Url(),
    "provider.fallback_urls": UrlList(),
    "provider.login": Text(0, 100),
    "provider.password": Secret(),
    "provider.apikey": Secret(),
    "gateway.garden": Garden(),
}
EDITABLE = tuple(RULES)  # the keys an admin may change on the settings page
# The keys a venue of a chain may set for itself: its admins the venue's texts and session rules,
# a chain admin also a provider account of the venue's own. The walled garden (of callpass's own
# gateway) is the chain's.
VENUE_KEYS = tuple(key for key in RULES if key.split(".")[0] in ("venue", "portal"))
VENUE_CHAIN_KEYS = VENUE_KEYS + tuple(key for key in RULES if key.startswith("provider."))
SECRETS = tuple(key for key, rule in RULES.items() if isinstance(rule, Secret))
PROVIDER_KEYS = tuple(key for key in RULES if key.startswith("provider."))
PROVIDER_CREDENTIALS = ("provider.login", "provider.password", "provider.apikey")
PER_LANGUAGE = tuple(key for key, rule in RULES.items() if isinstance(rule, Texts))


def check_url(text, *, empty_ok=False):
    """An http(s) URL with a host, as typed (stripped); Invalid otherwise."""
    text = text.strip()
    if not text and empty_ok:
        return ""
    try:
        parts = urlsplit(text)
        is_usable = parts.scheme in ("http", "https") and bool(parts.hostname) \
            and (parts.port is None or parts.port > 0)
    except ValueError:  # "http://[::1" (no closing bracket), "http://host:99999/" (no port)
        is_usable = False
    if not is_usable or " " in text or len(text) > 300:
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
    """The walled garden in canonical form, duplicates dropped; Invalid on the first bad entry,
    when there are more than GARDEN_MAX_ENTRIES, or when one entry lies within another (the
    firewall's sets hold intervals that do not overlap: nft refuses the second one). The settings
    page and the config check both use it, so a garden the page refuses cannot come in through
    the config file."""
    garden = []
    for text in entries:
        entry = check_garden_entry(text)
        if entry not in garden:
            garden.append(entry)
    if len(garden) > GARDEN_MAX_ENTRIES:
        raise Invalid(N_("At most %(n)s entries, please."), n=GARDEN_MAX_ENTRIES)
    networks = [ipaddress.ip_network(entry) for entry in garden]
    for index, network in enumerate(networks):
        for other in networks[:index]:
            if network.version == other.version and network.overlaps(other):
                # Two CIDR networks that overlap are one inside the other.
                inner, outer = (network, other) if network.subnet_of(other) else (other, network)
                raise Invalid(N_("“%(inner)s” lies within “%(outer)s”: the firewall cannot hold "
                                 "both, and “%(outer)s” already lets guests reach it. Remove "
                                 "“%(inner)s”."),
                              inner=inner.with_prefixlen, outer=outer.with_prefixlen)
    return garden


def cross_check(values, errors, *, needs_credentials=True):
    """The rules across keys, on {key: value} of every editable key: {key: Invalid} reported on
    the field the admin has to change (keys that already have an error are left alone)."""
    found = {}
    default = values["venue.default_language"]
    for key in PER_LANGUAGE:
        if RULES[key].shortest and not has_error(errors, key) and "venue.default_language" \
                not in errors and not as_texts(values[key], default).get(default):
            # the last step of the fallback: a guest of any language sees this text
            found[f"{key}.{default}"] = Invalid(N_("This cannot be empty."))
    if not {"venue.languages", "venue.default_language"} & set(errors) \
            and values["venue.default_language"] not in values["venue.languages"]:
        found["venue.default_language"] = Invalid(N_("Pick one of the languages offered."))
    if not {"venue.require_terms", "venue.terms_url"} & set(errors) \
            and not has_error(errors, "venue.terms_text") \
            and values["venue.require_terms"] \
            and not (values["venue.terms_text"] or values["venue.terms_url"]):
        found["venue.require_terms"] = Invalid(
            N_("Add the terms (text or link) before asking guests to accept them."))
    if needs_credentials \
            and not {"provider.login", "provider.password", "provider.apikey"} & set(errors) \
            and not values["provider.apikey"] \
            and not (values["provider.login"] and values["provider.password"]):
        found["provider.login"] = Invalid(N_("Enter the provider login and password, or an API key."))
    return found


def has_error(errors, key):
    """Whether key, or one of its per-language fields (key.<lang>), has an error."""
    return any(field == key or field.startswith(key + ".") for field in errors)


def check_all(config, *, needs_credentials=True):
    """{key: Invalid} for the editable keys of a loaded config (config.problems reports them)."""
    values, errors = {}, {}
    for key, rule in RULES.items():
        section, _, name = key.partition(".")
        values[key] = config[section][name]
        try:
            rule.check(values[key])
        except Invalid as exc:
            errors[key] = exc
    errors.update(cross_check(values, errors, needs_credentials=needs_credentials))
    return errors


def parse_form(form, effective, keys=EDITABLE):
    """({key: new value} for the keys that change, {key: Invalid}) from the settings form.

    effective is the current merged settings (settings.load); form a MultiDict; keys the keys
    the form has (a venue's form has VENUE_KEYS only: the others keep their effective values).
    """
    def get(key):
        section, _, name = key.partition(".")
        return effective[section][name]

    values, errors = {}, {}
    for key, rule in RULES.items():
        if key not in keys:
            values[key] = get(key)
            continue
        try:
            if key in PER_LANGUAGE:
                values[key], wrong = rule.read(form, key, get(key), get("venue.default_language"))
                errors.update(wrong)
            elif key in SECRETS:
                values[key] = rule.read(form, key, get(key))
            else:
                values[key] = rule.read(form, key)
        except Invalid as exc:
            errors[key] = exc
    errors.update(cross_check({key: values.get(key, get(key)) for key in RULES}, errors))
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
    for key in PER_LANGUAGE:
        values[key] = compact_texts(values[key], values["venue.default_language"])
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


def save_logo(svc, data, content_type, venue_id=MAIN_VENUE):
    """Store an uploaded logo (checked by check_logo); it replaces the venue's previous one."""
    name = logo_names(venue_id)[0]
    with storage.begin(svc.engine) as conn:
        conn.execute(asset.delete().where(asset.c.name == name))
        conn.execute(asset.insert().values(name=name, content_type=content_type, data=data,
                                           updated_at=utcnow()))


def remove_logo(svc, venue_id=MAIN_VENUE):
    """Forget the venue's uploaded logo (the chain's, or the venue.logo file, shows again)."""
    with storage.begin(svc.engine) as conn:
        conn.execute(asset.delete().where(asset.c.name == logo_names(venue_id)[0]))


# The walled-garden entries callpass has put into the firewall, kept in the setting table under a
# key that is no setting (load() reads only EDITABLE keys). `callpass-fw` has no verb that lists
# the garden, and the firewall must lose an entry once it is no longer configured: this record is
# how callpass knows what to take out.
PUSHED_GARDEN = "firewall.garden"


def pushed_garden(engine):
    """The entries callpass has put into the firewall's walled garden and not taken out since."""
    with engine.connect() as conn:
        value = conn.execute(select(setting.c.value)
                             .where(setting.c.key == PUSHED_GARDEN)).scalar()
    return json.loads(value) if value else []


def remember_pushed_garden(engine, entries):
    """Record the entries the firewall's walled garden now holds (see pushed_garden)."""
    with storage.begin(engine) as conn:
        conn.execute(setting.delete().where(setting.c.key == PUSHED_GARDEN))
        conn.execute(setting.insert().values(key=PUSHED_GARDEN, value=json.dumps(entries),
                                             updated_at=utcnow(), updated_by="callpass"))


def push_garden(firewall, old, new, engine=None):
    """Make the firewall's walled garden `new`: take out every entry of `old` or of the record of
    what callpass put there (pushed_garden) that new has not, then add what old has not.

    old is what the firewall is believed to hold (the previous effective garden); new is
    checked. engine holds the record (default: the running app's). Returns the firewall's error
    messages (empty when it took everything); an entry whose removal failed stays recorded, so
    the next sync tries again.
    """
    engine = services().engine if engine is None else engine
    pushed = pushed_garden(engine)
    failures, still_there = [], []
    for entry in dict.fromkeys([*old, *pushed]):  # in order, once each
        if entry in new:
            continue
        try:
            firewall.garden("del", entry)
        except FirewallError as exc:
            failures.append(str(exc))
            still_there.append(entry)
        except ValueError as exc:  # not a network: it never got into the firewall
            failures.append(str(exc))
    for entry in new:
        if entry in old:
            continue
        try:
            firewall.garden("add", entry)
        except (FirewallError, ValueError) as exc:
            failures.append(str(exc))
    if [*new, *still_there] != pushed:
        remember_pushed_garden(engine, [*new, *still_there])
    return failures


def sync_garden(svc):
    """Make the firewall's walled garden the effective one (at start, by `fw-sync`, after the
    table was made anew): add every entry, and take out the ones callpass put there that are no
    longer configured (say, removed from gateway.garden in the file).

    An entry an older version accepted but check_garden_entry now refuses (too wide) is taken
    out of the firewall instead (`up` keeps the garden), and reported with the failures. Entries
    callpass did not put there (`callpass-fw garden add` by hand, or added by a version before
    the record) are not known to it and stay until the table is made anew.
    """
    garden, refused, failures = [], [], []
    for entry in load(svc)["gateway"]["garden"]:
        try:
            garden.append(check_garden_entry(entry))
        except Invalid as exc:
            refused.append(entry)
            failures.append(f"removed from the firewall: {exc}")
    return failures + push_garden(svc.firewall, refused, garden, engine=svc.engine)
