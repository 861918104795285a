"""Guests sent by a router that keeps them: a MikroTik Hotspot or a UniFi controller.

When the gateway is not callpass's own (`[gateway] firewall` = "radius" or "unifi"), callpass
does not share the guest's network segment and cannot read its MAC from a neighbour table. The
router tells it instead, in the address it sends the guest to:

- MikroTik Hotspot: deploy/mikrotik/login.html posts the router's variables to `/mikrotik`
  (mac, ip, link-login-only, link-orig, chap-id, chap-challenge, and the router's identity, which
  names its venue in a chain: venues.py). After the call the wait page
  logs the device in at link-login-only with a one-time password (http-chap, computed here as
  the router expects); the router then asks RADIUS, which checks the password and that the MAC
  the router sees is the one that verified. With MAC login on, the router also asks by MAC at
  the next association, so a guest whose sign-in sheet closed gets online all the same.
- UniFi external portal: the controller sends the guest to `/guest/s/<site>/?id=<mac>&ap=…&t=…
  &url=…&ssid=…` (the site names the venue); after the call the backend authorises the MAC on
  the controller.

What the router said is kept in the guest's signed session cookie for an hour. A guest can forge
these variables (they come through its own browser); the worst it gets is to verify some other
device under its own phone number — the RADIUS login still checks the MAC the router saw, and
nobody gets online on another person's call. A forged identity or site puts the forger's own
session at another venue, whose router does not let it in.
"""

import hashlib
import ipaddress
import re
import time
from urllib.parse import urlsplit

from flask import Blueprint, redirect, request, session, url_for

from . import services, venues
from .radius import login_password, parse_mac

bp = Blueprint("routers", __name__)

KEY = "callpass_router"
LIFE_SECONDS = 3600
ROUTER_BACKENDS = ("radius", "unifi")  # backends whose guests are identified by their router
_OCTAL = re.compile(r"\\([0-7]{3})")
MAX_URL = 500


def decode_chap(text):
    """MikroTik's $(chap-id) / $(chap-challenge): octal escapes ("\\123") made for a JavaScript
    string literal, and plain characters; the bytes they stand for. ValueError when not that."""
    text = text or ""
    if len(text) > 200:
        raise ValueError("too long")
    out = bytearray()
    position = 0
    while position < len(text):
        match = _OCTAL.match(text, position)
        if match:
            out.append(int(match[1], 8) & 0xFF)
            position = match.end()
        else:
            code = ord(text[position])
            if code > 0xFF or text[position] == "\\":
                raise ValueError("not a CHAP value")
            out.append(code)
            position += 1
    return bytes(out)


def safe_url(url, default=""):
    """url when it is a plain http(s) address without credentials, else default."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.username or parts.password:
        return default
    return url


def remember(context):
    """Keep what the router said about this browser's device (for an hour)."""
    session[KEY] = {**context, "at": int(time.time())}


def context():
    """What the router said about this browser's device, or None (none, too old, or the
    gateway is callpass's own). A remote openNDS gateway's word (opennds_remote) counts
    whatever the backend: only that gateway's faskey could have written it."""
    saved = session.get(KEY)
    if not saved or (saved.get("kind") != "opennds" and
                     services().config["gateway"]["firewall"] not in ROUTER_BACKENDS):
        return None
    if time.time() - saved.get("at", 0) > LIFE_SECONDS:
        return None
    return saved


def identity():
    """(ip, mac) of the device as its router named it, or None."""
    saved = context()
    return (saved.get("ip", ""), saved["mac"]) if saved else None


def continue_url():
    """Where the guest was going, as the router said (MikroTik's link-orig, UniFi's url)."""
    saved = context()
    return saved.get("dst", "") if saved else ""


@bp.route("/mikrotik", methods=["GET", "POST"])
def mikrotik():
    """The MikroTik hotspot's login.html sends the guest here with the router's variables."""
    values = request.values
    mac = parse_mac(values.get("mac"))
    login_url = safe_url(values.get("link-login-only"))
    try:
        ip = str(ipaddress.ip_address(values.get("ip", "").strip()))
        chap_id = decode_chap(values.get("chap-id"))
        challenge = decode_chap(values.get("chap-challenge"))
    except ValueError:
        return redirect(url_for("guest.index"), code=303)  # nothing usable: the plain form
    if mac is None or not login_url or len(chap_id) > 1 or len(challenge) > 64:
        return redirect(url_for("guest.index"), code=303)
    venue_id = venues.named_by(services().engine, identity=values.get("identity", "").strip())
    remember({"kind": "mikrotik", "venue": venue_id, "mac": mac, "ip": ip,
              "login_url": login_url,
              "dst": safe_url(values.get("link-orig")),
              "chap_id": chap_id.hex(), "chap_challenge": challenge.hex()})
    return redirect(url_for("guest.index"), code=303)


@bp.get("/guest/s/<site>/")
def unifi(site):
    """A UniFi controller's external-portal redirect: ?id=<client MAC>&ap=…&t=…&url=…&ssid=…"""
    mac = parse_mac(request.args.get("id"))
    if mac is not None:
        venue_id = venues.named_by(services().engine, unifi_site=site)
        remember({"kind": "unifi", "venue": venue_id, "mac": mac,
                  "ip": request.remote_addr or "",
                  "dst": safe_url(request.args.get("url")),
                  "ssid": request.args.get("ssid", "")[:64]})
    return redirect(url_for("guest.index"), code=303)


def router_login(session_row):
    """The form that logs the device in at its MikroTik router after the call, or None.

    {"action": link-login-only, "fields": {username, password, dst, popup}}: the username is
    the device's MAC; with http-chap the password is MD5(chap-id + one-time password +
    challenge) in hex, as the router's own login page computes it; with http-pap the one-time
    password itself (it travels to the router only).
    """
    saved = context()
    if not saved or saved.get("kind") != "mikrotik" or session_row is None \
            or saved["mac"] != session_row.mac:
        return None
    password = login_password(services().config["portal"]["secret_key"], session_row.id)
    if saved["chap_id"]:
        material = bytes.fromhex(saved["chap_id"]) + password.encode() + \
            bytes.fromhex(saved["chap_challenge"])
        password = hashlib.md5(material).hexdigest()
    return {"action": saved["login_url"],
            "fields": {"username": saved["mac"], "password": password,
                       "dst": saved.get("dst", ""), "popup": "false"}}
