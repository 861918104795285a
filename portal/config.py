"""Configuration: one TOML file, overridden by CALLPASS_<SECTION>_<KEY> environment variables.

Every key has a default here; deploy/callpass.toml documents each one. A config is a plain nested
dict (section -> key -> value) so views and commands read it the same way.
"""

import copy
import importlib.util
import ipaddress
import os
import re
import shlex
import tomllib

from limits import parse_many

DEFAULTS = {
    "portal": {
        "listen": "0.0.0.0:8080",
        "public_url": "http://192.168.50.1:8080/",
        "secret_key": "",
        "database": "sqlite:///callpass.sqlite3",
        "default_region": "RU",
        "session_minutes": 240,
        "verification_minutes": 5,
        "neighbour_table": "/proc/net/arp",
        "ratelimit_storage": "memory://",
        "limit_per_device": "5 per minute; 20 per hour",
        "limit_per_phone": "3 per 10 minutes; 10 per day",
        "threads": 16,
        "connection_limit": 1000,
        "trusted_proxy": "",
        "remember_days": 0,
        "devices_per_phone": 3,
    },
    "venue": {
        "name": "Free Wi-Fi",
        "logo": "",
        "welcome": "",
        "terms_text": "",
        "terms_url": "",
        "require_terms": False,
        "languages": ["ru", "uk", "en"],
        "default_language": "ru",
        "timezone": "",
    },
    "provider": {
        "base_url": "https://smsc.ru",
        "fallback_urls": ["https://www2.smsc.ru"],
        "login": "",
        "password": "",
        "apikey": "",
        "timeout_seconds": 8,
        "max_concurrent": 8,
    },
    "callback": {
        "token": "",
        "signature": "none",
        "secret": "",
        "max_age_seconds": 600,
        "public_url": "",
    },
    "gateway": {
        "firewall": "script",
        "lan": "br-lan",
        "script": "/usr/local/sbin/callpass-fw",
        "script_timeout_seconds": 10,
        "garden": [],
        "tls_port": 0,
    },
    # A router that asks callpass through FreeRADIUS (MikroTik, UniFi, CoovaChilli, pfSense).
    "radius": {
        "token": "",
        "clients": ["127.0.0.1/32", "::1/128"],
        "secret": "",
        "coa_port": 3799,
        "idle_timeout_seconds": 0,
        "rate_limit": "",
    },
    # openNDS on the gateway: callpass is its FAS and drives it with ndsctl.
    "opennds": {
        "faskey": "",
        "ndsctl": "ndsctl",
    },
    # A UniFi Network controller that lets guests through (authorize-guest).
    "unifi": {
        "url": "",
        "username": "",
        "password": "",
        "site": "default",
        "verify_tls": True,
        "ca_file": "",
    },
    "admin": {
        "allow_from": ["127.0.0.0/8", "::1/128"],
        "retention_days": 183,
        "login_limit": "5 per 15 minutes",
    },
}

SIGNATURES = ("none", "md5", "sha1")
LANGUAGES = ("ru", "uk", "en")
MAX_SESSION_DAYS = 31  # the longest session; callpass-fw refuses a longer kernel timeout too
MAX_SESSION_MINUTES = MAX_SESSION_DAYS * 24 * 60
FIREWALLS = ("script", "noop", "radius", "opennds", "unifi")
MAX_RETENTION_DAYS = 36_500  # "keep for ever" is 100 years: a purge date must stay a date
INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # a Linux interface name (as callpass-fw checks)
# A host name (RFC 1123): dot-separated labels of letters, digits and inner hyphens.
HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


class ConfigError(Exception):
    """The configuration cannot be used; the message lists every problem found. config: what
    could be read (the file parsed, a bad or unknown key left out), None when nothing could."""

    def __init__(self, problems, config=None):
        self.problems = list(problems)
        self.config = config
        super().__init__("; ".join(self.problems))


def defaults():
    """A fresh copy of the built-in defaults."""
    return copy.deepcopy(DEFAULTS)


def load(path=None, environ=None, overrides=None):
    """Read the TOML file at path (if any), then apply environment overrides and explicit ones."""
    config = defaults()
    problems = []
    if path:
        try:
            with open(path, "rb") as fh:
                merge(config, tomllib.load(fh), problems, source=str(path))
        except FileNotFoundError:
            raise ConfigError([f"config file {path} does not exist"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {path} is not valid TOML: {exc}"]) from None
    apply_environment(config, os.environ if environ is None else environ, problems)
    if overrides:
        merge(config, overrides, problems, source="overrides")
    if problems:
        raise ConfigError(problems, config)
    return config


def merge(config, data, problems, source):
    """Copy known keys from data into config, converting to the default's type."""
    for section, values in data.items():
        if section not in config:
            # Sections later issues add (venue, admin, …) live in DEFAULTS; unknown ones are typos.
            problems.append(f"{source}: unknown section [{section}]")
            continue
        if not isinstance(values, dict):
            problems.append(f"{source}: [{section}] must be a table")
            continue
        for key, value in values.items():
            if key not in config[section]:
                problems.append(f"{source}: unknown key {section}.{key}")
                continue
            if isinstance(value, dict) and f"{section}.{key}" in per_language_keys():
                config[section][key] = value  # {lang: text}, checked by settings.RULES
                continue
            try:
                config[section][key] = coerce(value, config[section][key])
            except ValueError as exc:
                problems.append(f"{source}: {section}.{key}: {exc}")


def per_language_keys():
    """The keys whose value may also be a table of texts by language (venue.name, …)."""
    from .settings import PER_LANGUAGE  # settings imports this module
    return PER_LANGUAGE


def apply_environment(config, environ, problems):
    """Apply CALLPASS_<SECTION>_<KEY> variables, e.g. CALLPASS_PROVIDER_APIKEY."""
    for section, values in config.items():
        for key in values:
            name = f"CALLPASS_{section}_{key}".upper()
            if name in environ:
                try:
                    values[key] = coerce_text(environ[name], values[key])
                except ValueError as exc:
                    problems.append(f"{name}: {exc}")


def coerce(value, default):
    """Check a TOML value against the type of its default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def coerce_text(text, default):
    """Convert an environment variable's text to the type of the default."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if isinstance(default, int):
        try:
            return coerce(int(text), default)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


RATE = re.compile(r"\d+[kM]?(/\d+[kM]?)?")  # MikroTik's rx/tx form, e.g. "2M/4M" or "512k"


def radius_problems(radius, required):
    """What is wrong with [radius]; the token must be set when the RADIUS backend is chosen."""
    found = []
    token = radius["token"]
    if (required or token) and (len(token) < 16 or not token.replace("-", "").replace("_", "").isalnum()):
        found.append("radius.token must be a random value of at least 16 letters, digits, - or _")
    for network in radius["clients"]:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            found.append(f"radius.clients: {network!r} is not an address or network")
    if not 1 <= radius["coa_port"] <= 65535:
        found.append("radius.coa_port must be a port number (RFC 5176: 3799)")
    if radius["rate_limit"] and not RATE.fullmatch(radius["rate_limit"]):
        found.append("radius.rate_limit must look like \"2M/4M\" (upload/download) or be empty")
    return found


def storage_problems(portal):
    """What is wrong with portal.database and portal.ratelimit_storage, including a missing driver
    (PostgreSQL and Redis need `pip install 'callpass[chain]'`)."""
    found = []
    database, limits = portal["database"], portal["ratelimit_storage"]
    if database.startswith(("postgresql://", "postgresql+psycopg://")):
        if importlib.util.find_spec("psycopg") is None:
            found.append("portal.database is PostgreSQL, which needs the psycopg package: "
                         "pip install 'callpass[chain]'")
    elif not database.startswith("sqlite:///"):
        found.append("portal.database must be sqlite:///PATH (one node) or "
                     "postgresql+psycopg://USER:PASSWORD@HOST/NAME (a chain of venues)")
    if limits.startswith(("redis://", "rediss://")):
        if importlib.util.find_spec("redis") is None:
            found.append("portal.ratelimit_storage is Redis, which needs the redis package: "
                         "pip install 'callpass[chain]'")
    elif limits != "memory://":
        found.append("portal.ratelimit_storage must be memory:// (one node) or "
                     "redis://HOST:PORT/DB (shared by several nodes)")
    return found


def opennds_problems(opennds, required):
    """What is wrong with [opennds]; the faskey must be set when the openNDS backend is chosen."""
    found = []
    faskey = opennds["faskey"]
    if (required or faskey) and (len(faskey) < 16 or not faskey.isalnum()):
        found.append("opennds.faskey must be a random value of at least 16 letters and digits "
                     "(openNDS's faskey, the same on both sides)")
    try:
        if not shlex.split(opennds["ndsctl"]):
            found.append("opennds.ndsctl must name the ndsctl command")
    except ValueError:
        found.append("opennds.ndsctl has an unbalanced quote")
    return found


def is_listen_address(listen):
    """Whether portal.listen is HOST:PORT that waitress can listen on: HOST "*", an IPv4 address,
    an IPv6 address in brackets ("[::]") or a syntactically valid host name; PORT 1-65535."""
    host, _, port = listen.rpartition(":")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        return False
    if host == "*":
        return True
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
        else:
            ipaddress.IPv4Address(host)
        return True
    except ValueError:
        # A name whose last label is all digits would be a mistyped IPv4 address ("999.1.1.1").
        return bool(HOST_NAME.fullmatch(host)) and len(host) <= 253 \
            and not host.rpartition(".")[2].isdigit()


def is_one_rate_limit(text):
    """Whether text is exactly one rate limit of at least 1, like "5 per 15 minutes"."""
    try:
        limits = parse_many(text)
    except ValueError:
        return False
    return len(limits) == 1 and limits[0].amount >= 1


def problems(config, demo=False):
    """Everything wrong with a loaded config, as messages naming the key. Empty when usable."""
    from .settings import check_all, check_url  # settings imports this module
    found = []
    portal, provider, callback, gateway = (
        config["portal"], config["provider"], config["callback"], config["gateway"])
    if not is_listen_address(portal["listen"]):
        found.append("portal.listen must be HOST:PORT with HOST \"*\" (every address), an IPv4 "
                     "address, an IPv6 address in brackets or a host name, and PORT 1-65535: "
                     "e.g. \"0.0.0.0:8080\", \"*:8080\" or \"[::]:8080\"")
    found += storage_problems(portal)
    if portal["trusted_proxy"]:
        try:
            ipaddress.ip_address(portal["trusted_proxy"])
        except ValueError:
            found.append("portal.trusted_proxy must be one IP address (the TLS proxy's), or empty")
    try:
        check_url(portal["public_url"])
    except ValueError:
        found.append("portal.public_url must be an http:// or https:// address with a host, "
                     "e.g. https://portal.example.net/ or http://192.168.50.1:8080/")
    for key in ("limit_per_device", "limit_per_phone"):
        try:
            parse_many(portal[key])
        except ValueError:
            found.append(f"portal.{key} must look like \"5 per minute; 20 per hour\"")
    if not is_one_rate_limit(config["admin"]["login_limit"]):
        # admin.py reads it with limits.parse: a second limit would be ignored without a word.
        found.append("admin.login_limit must be one limit of at least 1, like "
                     "\"5 per 15 minutes\"")
    for network in config["admin"]["allow_from"]:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            found.append(f"admin.allow_from: {network!r} is not an address or network")
    # The keys the admin page edits are checked by the page's own rules (settings.RULES).
    for key, exc in check_all(config, needs_credentials=not demo).items():
        found.append(f"{key}: {exc}")
    if not 1 <= config["admin"]["retention_days"] <= MAX_RETENTION_DAYS:
        found.append(f"admin.retention_days must be 1 to {MAX_RETENTION_DAYS} (100 years)")
    if callback["public_url"] and not callback["public_url"].startswith(("http://", "https://")):
        found.append("callback.public_url must start with https:// or http://, or be empty")
    if callback["signature"] not in SIGNATURES:
        found.append(f"callback.signature must be one of {', '.join(SIGNATURES)}")
    if callback["max_age_seconds"] < 60:
        found.append("callback.max_age_seconds must be at least 60 (a notification older than "
                     "this is refused; the provider's and the gateway's clocks differ a little)")
    if not INTERFACE.fullmatch(gateway["lan"]):
        found.append("gateway.lan must be the name of the guests' interface or bridge, e.g. br-lan")
    if gateway["script_timeout_seconds"] < 1:
        found.append("gateway.script_timeout_seconds must be at least 1")
    if gateway["tls_port"] > 65535:
        found.append("gateway.tls_port must be a port number (1-65535), or 0 for none")
    if gateway["firewall"] not in FIREWALLS:
        found.append(f"gateway.firewall must be one of {', '.join(FIREWALLS)}")
    found += radius_problems(config["radius"], gateway["firewall"] == "radius" and not demo)
    if gateway["firewall"] == "unifi":
        unifi = config["unifi"]
        if not unifi["url"].startswith(("http://", "https://")):
            found.append("unifi.url must be the controller's address, e.g. https://192.168.1.2:8443")
        if not (unifi["username"] and unifi["password"]):
            found.append("unifi.username and unifi.password must be set (a local controller "
                         "account with the Hotspot operator role or more)")
    found += opennds_problems(config["opennds"], gateway["firewall"] == "opennds" and not demo)
    if not 1 <= provider["timeout_seconds"] <= 60:
        found.append("provider.timeout_seconds must be between 1 and 60")
    if not 4 <= portal["threads"] <= 512:
        found.append("portal.threads must be between 4 and 512")
    if not 10 <= portal["connection_limit"] <= 10000:
        found.append("portal.connection_limit must be between 10 and 10000")
    if not 1 <= provider["max_concurrent"] <= portal["threads"] // 2:
        found.append("provider.max_concurrent must be at least 1 and at most half of "
                     f"portal.threads ({portal['threads'] // 2}), so other requests always "
                     "find a free thread")
    if demo:
        return found
    if len(portal["secret_key"]) < 16:
        found.append("portal.secret_key must be set to a long random value (at least 16 characters)")
    if len(callback["token"]) < 16:
        found.append("callback.token must be set to a random value of at least 16 characters")
    elif not callback["token"].replace("-", "").replace("_", "").isalnum():
        found.append("callback.token may only contain letters, digits, - and _")
    if callback["signature"] != "none" and not callback["secret"]:
        found.append(f"callback.secret must be set when callback.signature is {callback['signature']}")
    return found

