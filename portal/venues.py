"""Venues: the hotspots of a chain on one callpass, and which one a request is about.

A venue is what a guest arrives through. Its router names it:
- a MikroTik hotspot by its identity: deploy/mikrotik/login.html posts `$(identity)`, and the
  router's RADIUS requests carry the same identity as NAS-Identifier;
- any RADIUS router by NAS-Identifier, else by the Wi-Fi network in Called-Station-Id
  ("AA-BB-CC-DD-EE-FF:<SSID>": the SSID, or the whole value), else by its address
  (NAS-IP-Address or the source);
- a UniFi controller by its site (`/guest/s/<site>/`);
- an openNDS gateway by the address it sends guests to, `/opennds/<slug>/`, with its
  gatewayname and faskey (opennds_remote.py).
A guest no known router names — and every guest of a single-venue install — belongs to the main
venue (id 1), which always exists. Verifications and sessions carry their venue; a device has at
most one open session in the whole chain (a new one elsewhere replaces it), and a router lets in
only a session of its own venue.

A venue has its own settings laid over the chain's (settings.py), its own admins (an admin with
a venue sees that venue only) and its own slice of the identification log.
"""

import ipaddress
import re
from datetime import timedelta

from flask import g, has_request_context
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from . import storage
from .catalog import N_
from .storage import MAIN_VENUE, access_session, utcnow, venue

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
SITE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STATION = re.compile(r"(?:[0-9A-Fa-f]{2}[-:.]?){5}[0-9A-Fa-f]{2}:(.+)")
# An openNDS gatewayname: its URL encoding is itself, so there is no doubt about the gatewayhash.
GATEWAY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FASKEY = re.compile(r"[A-Za-z0-9]{16,128}")
# The fields an admin edits (the main venue's slug stays "main"), besides the openNDS gateway's
# faskey, which is written but never shown.
FIELDS = ("slug", "name", "nas_identifier", "called_station", "nas_ip", "unifi_site",
          "opennds_gateway")
SECRET = "opennds_faskey"


class Invalid(ValueError):
    """The venue form is not acceptable: {field: (msgid, params)}."""

    def __init__(self, errors):
        super().__init__(", ".join(errors))
        self.errors = errors


def by_id(engine, venue_id):
    with engine.connect() as conn:
        return conn.execute(select(venue).where(venue.c.id == venue_id)).first()


def by_slug(engine, slug):
    with engine.connect() as conn:
        return conn.execute(select(venue).where(venue.c.slug == slug)).first()


def is_chain(engine):
    """Whether there is more than the main venue."""
    with engine.connect() as conn:
        return conn.execute(select(venue.c.id).where(venue.c.id != MAIN_VENUE).limit(1)
                            ).first() is not None


def slugs(engine):
    """{venue id: slug} of every venue, main first."""
    with engine.connect() as conn:
        return dict(conn.execute(select(venue.c.id, venue.c.slug).order_by(venue.c.id)).all())


def named_by(engine, *, identity="", called_station="", nas_ip="", unifi_site=""):
    """The id of the venue a router names (by identity/NAS-Identifier first, then by the network
    in Called-Station-Id, then by address, then by UniFi site), or MAIN_VENUE when none is known."""
    where = []
    if identity:
        where.append(venue.c.nas_identifier == identity[:64])
    if called_station:
        where.append(venue.c.called_station.in_(station_names(called_station)))
    if nas_ip:
        where.append(venue.c.nas_ip == nas_ip[:45])
    if unifi_site:
        where.append(venue.c.unifi_site == unifi_site[:64])
    if not where:
        return MAIN_VENUE
    with engine.connect() as conn:
        for condition in where:  # in order: an identity match wins over an address match
            found = conn.execute(select(venue.c.id).where(condition)).scalar()
            if found is not None:
                return found
    return MAIN_VENUE


def station_names(called_station):
    """What a venue's called_station may be for a Called-Station-Id: the network name after the
    access point's MAC ("AA-BB-CC-DD-EE-FF:Arbat Guest" -> "Arbat Guest"), and the whole value."""
    names = [called_station[:64]]
    match = STATION.fullmatch(called_station)
    if match:
        names.insert(0, match[1][:64])
    return names


def current():
    """The venue the running request is about: the admin's (admin pages), else the one the
    guest's router named (routers.context), else the main venue."""
    if not has_request_context():
        return MAIN_VENUE
    if "callpass_venue" in g:
        return g.callpass_venue
    from . import routers  # routers imports settings, which imports this module

    saved = routers.context()
    return (saved or {}).get("venue", MAIN_VENUE)


def listing(engine):
    """Every venue with its live counts: [(row, online now, sessions in the last 24 hours)],
    main venue first."""
    now = utcnow()
    day_ago = now - timedelta(days=1)
    with engine.connect() as conn:
        rows = conn.execute(select(venue).order_by(venue.c.id)).all()
        online = dict(conn.execute(
            select(access_session.c.venue_id, func.count())
            .where(access_session.c.ended_at.is_(None), access_session.c.ends_at > now)
            .group_by(access_session.c.venue_id)).all())
        last_day = dict(conn.execute(
            select(access_session.c.venue_id, func.count())
            .where(access_session.c.started_at >= day_ago)
            .group_by(access_session.c.venue_id)).all())
    return [(row, online.get(row.id, 0), last_day.get(row.id, 0)) for row in rows]


def read_form(form, *, is_main=False, has_faskey=False):
    """The venue fields an admin typed, checked: {field: value or None}. Invalid otherwise.

    An openNDS gateway needs its faskey: a blank one keeps the venue's (has_faskey), and no
    gateway means no faskey."""
    values, errors = {}, {}
    text = {name: form.get(name, "").strip() for name in FIELDS}
    if is_main:
        values["slug"] = "main"
    elif not SLUG.fullmatch(text["slug"]):
        errors["slug"] = (N_("Use 1 to 40 lowercase letters, digits and dashes "
                             "(for example cafe-arbat)."), {})
    else:
        values["slug"] = text["slug"]
    if not 1 <= len(text["name"]) <= 100 or _has_control(text["name"]):
        errors["name"] = (N_("Give the venue a name of at most 100 characters."), {})
    values["name"] = text["name"]
    identity = text["nas_identifier"]
    if len(identity) > 64 or _has_control(identity):
        errors["nas_identifier"] = (N_("At most 64 characters, without control characters."), {})
    values["nas_identifier"] = identity or None
    station = text["called_station"]
    if len(station) > 64 or _has_control(station):
        errors["called_station"] = (N_("At most 64 characters, without control characters."), {})
    values["called_station"] = station or None
    if text["nas_ip"]:
        try:
            values["nas_ip"] = str(ipaddress.ip_address(text["nas_ip"]))
        except ValueError:
            errors["nas_ip"] = (N_("Enter an IP address (for example 192.0.2.10)."), {})
    else:
        values["nas_ip"] = None
    if text["unifi_site"] and not SITE.fullmatch(text["unifi_site"]):
        errors["unifi_site"] = (N_("Use letters, digits, dots, dashes and underscores."), {})
    values["unifi_site"] = text["unifi_site"] or None
    gateway, faskey = text["opennds_gateway"], form.get(SECRET, "").strip()
    if gateway and is_main:
        # The main venue's guests are the local gateway's (and every unnamed router's).
        errors["opennds_gateway"] = (N_("Add a venue of its own for an openNDS gateway."), {})
    elif gateway and not GATEWAY_NAME.fullmatch(gateway):
        errors["opennds_gateway"] = (N_("Use 1 to 64 letters, digits, dots, dashes and "
                                        "underscores."), {})
    values["opennds_gateway"] = gateway or None
    if faskey and not FASKEY.fullmatch(faskey):
        errors[SECRET] = (N_("Use 16 to 128 letters and digits (openssl rand -hex 32 makes "
                             "one)."), {})
    elif not gateway:
        values[SECRET] = None
    elif faskey:
        values[SECRET] = faskey
    elif not has_faskey:
        errors[SECRET] = (N_("Enter the faskey of the gateway's openNDS configuration."), {})
    if errors:
        raise Invalid(errors)
    return values


def filled(values):
    """The venue fields that have a value (what the audit log keeps of a change; a faskey is
    only said to be new)."""
    return {key: "(new)" if key == SECRET else value for key, value in values.items() if value}


def _has_control(text):
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def save(engine, values, venue_id=None):
    """Add a venue (venue_id None) or change one; returns its id. Invalid when another venue
    already has the slug or one of the router names."""
    try:
        with storage.begin(engine) as conn:
            clash = _clash(conn, values, venue_id)
            if clash:
                raise Invalid(clash)
            if venue_id is None:
                return conn.execute(venue.insert().values(**values, created_at=utcnow())
                                    ).inserted_primary_key[0]
            conn.execute(update(venue).where(venue.c.id == venue_id).values(**values))
            return venue_id
    except IntegrityError:  # a clash written by another node between the check and the write
        raise Invalid({"slug": (N_("Another venue has this name or router already."), {})}) \
            from None


def _clash(conn, values, venue_id):
    errors = {}
    for name in ("slug", "nas_identifier", "called_station", "nas_ip", "unifi_site",
                 "opennds_gateway"):
        if values.get(name) is None:
            continue
        other = conn.execute(select(venue.c.slug).where(getattr(venue.c, name) == values[name],
                                                       venue.c.id != (venue_id or 0))).scalar()
        if other is not None:
            errors[name] = (N_("The venue “%(other)s” has this already."), {"other": other})
    return errors
