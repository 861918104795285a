"""Routers that ask: the HTTP side of FreeRADIUS's rlm_rest, and the RADIUS backend.

Most hotspot routers (MikroTik Hotspot, UniFi's RADIUS MAC authentication, CoovaChilli,
pfSense/OPNsense) ask a RADIUS server whether a device may go online. FreeRADIUS is that server
(deploy/freeradius/) and asks callpass over HTTP, with the request's attributes as JSON:

- authorize: a device (its MAC, from Calling-Station-Id or User-Name) with an open access session
  is accepted for the seconds it has left; anyone else is rejected. A router login with a
  password (MikroTik http-chap: the wait page hands the router a one-time password) gets the
  password back as Cleartext-Password, and FreeRADIUS's chap or pap module checks it.
- accounting: Start / Interim-Update / Stop land on the device's session (bytes, time, router).

Only `radius.clients` with the path token get an answer. With `[gateway] firewall = "radius"` the
desired-state core needs nothing pushed to let a device in (the router asks); ending a session
sends the router an RFC 5176 Disconnect-Message (`RadiusBackend`).
"""

import hashlib
import hmac
import ipaddress
import logging
import re
from pathlib import Path

from flask import Blueprint, Response, abort, jsonify, request
from sqlalchemy import select

from . import auth, services, sessions, storage, venues
from .firewall import Backend
from .storage import access_session, nas_session, utcnow

log = logging.getLogger(__name__)

bp = Blueprint("radius", __name__)

DICTIONARY = Path(__file__).with_name("radius.dictionary")  # what pyrad needs to send a Disconnect
DISCONNECT_TIMEOUT_SECONDS = 2
_HEX12 = re.compile(r"[0-9a-f]{12}")
_SEPARATORS = re.compile(r"[:.\-\s]")
UNITS = {"": 1, "k": 1_000, "M": 1_000_000}


# --- Reading rlm_rest's JSON --------------------------------------------------------------------

def attribute(body, name):
    """The first value of attribute `name` as text, or None. rlm_rest sends
    {"Name": {"type": "string", "value": ["…"]}}; a plain {"Name": "…"} is taken too."""
    value = body.get(name)
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def parse_mac(text):
    """"aa:bb:cc:dd:ee:ff" from any common spelling (AA-BB-…, aabb.ccdd.eeff, aabbccddeeff), or
    None when text is not a MAC."""
    digits = _SEPARATORS.sub("", (text or "").strip().lower())
    if not _HEX12.fullmatch(digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def device_mac(body):
    """The device's MAC: Calling-Station-Id (what the router saw) before User-Name (what a login
    form may have typed)."""
    return parse_mac(attribute(body, "Calling-Station-Id")) or parse_mac(attribute(body, "User-Name"))


def login_password(secret_key, session_id):
    """The one-time password a router login uses for an access session (MikroTik http-chap):
    derived from the portal's secret key, so nothing needs storing; 16 characters."""
    digest = hmac.new(secret_key.encode(), f"router-login:{session_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:16]


def bits_per_second(rate):
    """"2M" -> 2000000, "512k" -> 512000."""
    number, unit = re.fullmatch(r"(\d+)([kM]?)", rate).groups()
    return int(number) * UNITS[unit]


# --- The API FreeRADIUS calls -------------------------------------------------------------------

def radius_body(token):
    """The request's JSON attributes, after checking who is asking: an empty 404 for anyone
    else (the API does not show itself to guests, and FreeRADIUS logs no page)."""
    cfg = services().config["radius"]
    if not cfg["token"] or not hmac.compare_digest(token.encode(), cfg["token"].encode()):
        abort(Response(status=404))
    if not auth.is_allowed_address(request.remote_addr, cfg["clients"]):
        log.warning("radius: refused a request from %s (not in radius.clients)", request.remote_addr)
        abort(Response(status=404))
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(Response("the body must be rlm_rest's JSON object\n", status=400,
                       content_type="text/plain"))
    return body


def session_reply(session, cfg):
    """The reply attributes for an accepted device: its time left and the venue's limits."""
    reply = {"reply:Session-Timeout": sessions.seconds_until(session.ends_at)}
    if cfg["idle_timeout_seconds"]:
        reply["reply:Idle-Timeout"] = cfg["idle_timeout_seconds"]
    if cfg["rate_limit"]:
        upload, _, download = cfg["rate_limit"].partition("/")
        reply["reply:Mikrotik-Rate-Limit"] = cfg["rate_limit"]
        reply["reply:WISPr-Bandwidth-Max-Up"] = bits_per_second(upload)
        reply["reply:WISPr-Bandwidth-Max-Down"] = bits_per_second(download or upload)
    return reply


def reject(message):
    """401: FreeRADIUS answers Access-Reject with this Reply-Message."""
    return jsonify({"reply:Reply-Message": message}), 401


def nas_venue(engine, body):
    """The venue of the router asking: by NAS-Identifier, else by the network in
    Called-Station-Id, else by NAS-IP-Address (our FreeRADIUS site fills in the source address
    when the router sends none); the main venue when none is known."""
    address = attribute(body, "NAS-IP-Address") or ""
    return venues.named_by(engine, identity=attribute(body, "NAS-Identifier"),
                           called_station=attribute(body, "Called-Station-Id") or "",
                           nas_ip=address if _is_ip(address) else "")


@bp.post("/radius/<token>/authorize")
def authorize(token):
    body = radius_body(token)
    svc = services()
    mac = device_mac(body)
    if mac is None:
        return reject("No device address (Calling-Station-Id or User-Name) in the request")
    typed = parse_mac(attribute(body, "User-Name"))
    if typed is not None and typed != mac:
        return reject("User-Name names another device than Calling-Station-Id")
    session = sessions.active_session(svc.engine, mac)
    if session is None:
        return reject("This device has not signed in: open the Wi-Fi sign-in page")
    if session.venue_id != nas_venue(svc.engine, body):
        return reject("This device signed in at another venue: open the Wi-Fi sign-in page")
    reply = session_reply(session, svc.config["radius"])
    if attribute(body, "CHAP-Password") or attribute(body, "User-Password"):
        # A login with a password: FreeRADIUS's chap or pap module compares it with this.
        reply["control:Cleartext-Password"] = login_password(svc.config["portal"]["secret_key"],
                                                              session.id)
    else:
        reply["control:Auth-Type"] = "Accept"  # MAC authentication: the router knows the MAC
    return jsonify(reply)


@bp.post("/radius/<token>/accounting")
def accounting(token):
    body = radius_body(token)
    kind = attribute(body, "Acct-Status-Type")
    mac = device_mac(body)
    if kind in ("Start", "Interim-Update", "Stop", "1", "2", "3") and mac is not None:
        engine = services().engine
        if not record_accounting(engine, mac, body, stopped=kind in ("Stop", "2"),
                                 venue_id=nas_venue(engine, body)):
            log.info("radius: accounting for %s, which has no session here", mac)
    return "", 204


def octets(body, name):
    """An octet counter with its Gigawords (the counter's overflows) folded in."""
    low = int(attribute(body, f"Acct-{name}-Octets") or 0)
    high = int(attribute(body, f"Acct-{name}-Gigawords") or 0)
    return high * 2**32 + low


def record_accounting(engine, mac, body, stopped, venue_id):
    """Put what the router reported on mac's newest session at the router's venue (one row per
    router session: a device that moved on to another venue keeps its volume where it was
    used). False when mac never had a session there."""
    with storage.begin(engine) as conn:
        now = utcnow()
        session = conn.execute(select(access_session.c.id)
                               .where(access_session.c.mac == mac,
                                      access_session.c.venue_id == venue_id)
                               .order_by(access_session.c.id.desc()).limit(1)).first()
        if session is None:
            return False
        key = dict(access_session_id=session.id,
                   nas_ip=attribute(body, "NAS-IP-Address") or request.remote_addr or "",
                   nas_session_id=(attribute(body, "Acct-Session-Id") or "")[:64])
        values = dict(nas_identifier=(attribute(body, "NAS-Identifier") or "")[:64],
                      user_name=(attribute(body, "User-Name") or "")[:64],
                      bytes_in=octets(body, "Input"), bytes_out=octets(body, "Output"),
                      seconds=int(attribute(body, "Acct-Session-Time") or 0), updated_at=now)
        if stopped:
            values["stopped_at"] = now
        matches = [nas_session.c[name] == value for name, value in key.items()]
        changed = conn.execute(nas_session.update().where(*matches).values(**values)).rowcount
        if not changed:
            conn.execute(nas_session.insert().values(**key, **values, started_at=now))
    return True


# --- The backend: the router asks, a revoke is a Disconnect-Message -----------------------------

class RadiusBackend(Backend):
    """[gateway] firewall = "radius": letting a device in needs nothing (its router asks
    FreeRADIUS, which asks callpass); ending a session sends the router that reported it an
    RFC 5176 Disconnect-Request. The outcome is kept on the session (`disconnect_result`) and
    shown to the admin; a router that does not answer never holds up the other changes."""

    name = "radius"

    @classmethod
    def from_config(cls, config, engine):
        radius = config["radius"]
        return cls(engine, radius["secret"], radius["coa_port"])

    def __init__(self, engine, secret, coa_port=3799, timeout=DISCONNECT_TIMEOUT_SECONDS):
        self.engine = engine
        self.secret = secret
        self.coa_port = coa_port
        self.timeout = timeout

    def apply(self, changes):
        for change in changes:
            if change[0] == "revoke":
                self.disconnect(change[1])

    def disconnect(self, mac):
        """Ask the router of mac's newest ended session to cut it off; record the outcome."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(access_session.c.id, nas_session.c.nas_ip, nas_session.c.nas_session_id,
                       nas_session.c.user_name)
                .select_from(access_session.outerjoin(
                    nas_session, nas_session.c.access_session_id == access_session.c.id))
                .where(access_session.c.mac == mac, access_session.c.ended_at.is_not(None))
                .order_by(access_session.c.ended_at.desc(), nas_session.c.updated_at.desc())
                .limit(1)).first()
        if row is None:
            return
        if row.nas_ip is None:
            result = "no router has reported this device (no RADIUS accounting): nothing to disconnect"
        elif not self.secret:
            result = "radius.secret is not set: no Disconnect-Message was sent"
        else:
            result = self.send_disconnect(row.nas_ip, row.nas_session_id, row.user_name, mac)
        log.info("radius: disconnect %s at %s: %s", mac, row.nas_ip, result)
        with storage.begin(self.engine) as conn:
            conn.execute(access_session.update().where(access_session.c.id == row.id)
                         .values(disconnect_result=result[:200]))

    def send_disconnect(self, nas_ip, nas_session_id, user_name, mac):
        """One Disconnect-Request; the outcome in words."""
        from pyrad import packet
        from pyrad.client import Client, Timeout
        from pyrad.dictionary import Dictionary

        client = Client(server=nas_ip, secret=self.secret.encode(), coaport=self.coa_port,
                        dict=Dictionary(str(DICTIONARY)), retries=1, timeout=self.timeout)
        request = client.CreateCoAPacket(code=packet.DisconnectRequest)
        request["Acct-Session-Id"] = nas_session_id
        request["User-Name"] = user_name or mac
        request["Calling-Station-Id"] = mac.upper()
        if _is_ip(nas_ip):
            request["NAS-IP-Address"] = nas_ip
        try:
            answer = client.SendPacket(request)
        except Timeout:
            return f"the router ({nas_ip}) did not answer within {self.timeout} s"
        except OSError as exc:
            return f"the router ({nas_ip}) could not be reached: {exc}"
        finally:
            client._CloseSocket()  # pyrad keeps its socket open otherwise (no public close)
        if answer.code == packet.DisconnectACK:
            return "disconnected by the router"
        cause = answer.get("Error-Cause", [None])[0]
        return f"the router ({nas_ip}) refused" + (f" (Error-Cause {cause})" if cause else "")


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
