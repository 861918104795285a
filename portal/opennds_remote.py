"""openNDS gateways that are venues of a chain: callpass as their remote FAS (openNDS level 3).

A venue may name an openNDS gateway (its `gatewayname`) and that gateway's `faskey`
(/admin/venues or `callpass venue set SLUG --opennds-gateway NAME --faskey KEY`). The gateway
sends its guests to `https://<portal>/opennds/<venue slug>/` (its fasremotefqdn and faspath) and
asks the same address for the guests to let in; callpass never reaches into the gateway. Level 3
is openNDS's level for a FAS elsewhere: the address is HTTPS, the guest's details are encrypted
with the faskey, and openNDS's own `authmon` polls the FAS.

A device the gateway sends to callpass while its session is live is one the gateway forgot (a
reboot): its session is offered again with the device's new token, and it is "connecting" until
the gateway says it let it in.

The guest's arrival: `GET /opennds/<slug>/?fas=<base64 of base64 AES-256-CBC>&iv=<16 chars>`.
The key is the faskey as PHP's openssl_encrypt takes it (cut or padded with zero bytes to 32). The
plain text is openNDS's "hid=…, clientip=…, clientmac=…, gatewayname=…, …". Only this gateway's
faskey opens it, so the device's MAC and address come from it (the router's word, as a UniFi
controller's id= is). A fas whose gatewayname is not the venue's, or that does not decrypt into
plain, well formed values, is ignored: CBC without a MAC lets someone flip bits of a block, but
only by turning the block before it into random bytes, which fails these checks. The device's
token for this gateway, sha256(hid + faskey) ("rhid"), is kept with the guest's verification.
openNDS 9.x adds the device's own MAC to the configured name ("cafe-arbat Node:02cc00000001 "), so
one venue may have several gateway devices ("nodes"); each authentic fas teaches callpass its
node's gatewayhash (sha256 of the name as openNDS URL-encodes it), kept in `opennds_node`.

The gateway's poll: authmon (/usr/lib/opennds/authmon.sh, every nat_traversal_poll_interval
seconds, 10 by default) POSTs `auth_get`, `gatewayhash` and `payload` (base64). A poll whose
gatewayhash is no known node of the venue gets an empty list and changes nothing (a new gateway
is known from its first guest on). Otherwise, with payload "none" callpass answers "* " and,
URL-encoded and space separated, "rhid minutes 0 0 0 0" for each live session of the venue the
gateway has not taken yet (authmon reads 1024 characters: about ten per poll, the oldest first).
authmon runs `ndsctl auth` for each and posts back "* rhid …" for those openNDS let in: those
sessions are then online (until then the guest is shown "connecting"). That is `auth_get=view`
(9.x); with `list` (older authmon, which sends no acknowledgement) the entries count as taken
once handed over. `clear` (authmon starting) forgets nothing: what is pending is read from the
sessions, not kept aside.

What openNDS's design leaves open, and what callpass does about it:
- The poll is authenticated by the gatewayhash only, which anyone who knows the gatewayname and
  the gateway's MAC can compute. callpass never shows a gatewayname to guests, and the venue
  form asks for one nobody guesses. Someone who knew both could read which tokens are pending
  (useless without the device) or acknowledge them falsely (the guest is shown online while the
  gateway still holds it back, until the wait page's link to the gateway's /opennds_auth/ lets
  it in).
- authmon only lets guests in: ending or shortening a session early does not reach the gateway,
  which keeps the guest until the minutes it was given run out. README says so.
"""

import base64
import binascii
import hashlib
import ipaddress
import logging
import math
import re
from datetime import timedelta
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flask import Blueprint, abort, redirect, request, url_for
from limits import parse
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from . import opennds, routers, services, storage
from .extensions import hit, limiter
from .firewall import normalise_mac
from .sessions import seconds_until
from .storage import access_session, opennds_node, utcnow, venue, verification

log = logging.getLogger(__name__)

bp = Blueprint("opennds_remote", __name__)

IV_LENGTH = 16      # openNDS's iv: 16 characters
MAX_AUTHLIST = 1024 - 2     # what authmon reads of an answer, after "* "
MAX_ACKS = 200
SEEN_EVERY = timedelta(seconds=60)      # how often a gateway's last poll is written down
IGNORED_LOGGED = parse("20 per minute")  # ignored arrivals logged per address
_TOKEN = re.compile(r"[0-9a-f]{64}")
TEXT = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


# --- what openNDS sends -------------------------------------------------------------------------

def aes_key(faskey):
    """The AES-256 key openNDS's PHP uses for faskey: its bytes, cut or zero-padded to 32."""
    return faskey.encode("utf-8")[:32].ljust(32, b"\0")


def decrypt(fas, iv, faskey):
    """The plain text of a level 3 fas, or None when it is not one made with faskey."""
    if not isinstance(fas, str) or not isinstance(iv, str) or len(iv) != IV_LENGTH or \
            not fas or len(fas) > 2 * opennds.MAX_FAS_LENGTH:
        return None
    try:
        # openNDS puts the base64 in the URL as it is: a "+" in it reads back as a space.
        sealed = base64.b64decode(base64.b64decode(fas.replace(" ", "+"), validate=True),
                                  validate=True)
        if not sealed or len(sealed) % 16:
            return None
        decryptor = Cipher(algorithms.AES(aes_key(faskey)), modes.CBC(iv.encode("ascii"))
                           ).decryptor()
        padded = decryptor.update(sealed) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        text = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return None
    return text


def gateway_address(value):
    """openNDS's "ip:port" as a host to send a browser to, or None when it is not that."""
    host, sep, port = (value or "").rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return None
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def accept(text, row):
    """(the router context of the guest, the gateway node's (gatewayhash, MAC)) from the
    decrypted fas text of venue row, or None when it is not well formed or not this gateway's."""
    fields = opennds.fields_of(text)
    if not fields or not is_gateway_name(fields.get("gatewayname", ""), row.opennds_gateway):
        return None
    try:
        mac = normalise_mac(fields.get("clientmac", ""))
        ip = str(ipaddress.ip_address(fields.get("clientip", "")))
        node_mac = normalise_mac(colons(fields.get("gatewaymac", "")))
    except ValueError:
        return None
    gateway = gateway_address(fields.get("gatewayaddress"))
    hid = fields.get("hid", "")
    if gateway is None or not _TOKEN.fullmatch(hid):
        return None
    origin = opennds.origin_url(fields.get("originurl"))
    context = {"kind": "opennds", "venue": row.id, "mac": mac, "ip": ip, "dst": origin,
               "gateway": gateway, "token": opennds.auth_token(hid, row.opennds_faskey)}
    return context, (gateway_hash(raw_field(text, "gatewayname")), node_mac)


def colons(mac):
    """openNDS's gatewaymac ("02cc00000001") as a MAC with colons; anything else as it is."""
    if re.fullmatch(r"[0-9a-fA-F]{12}", mac):
        return ":".join(mac[i:i + 2] for i in range(0, 12, 2))
    return mac


def is_gateway_name(value, name):
    """Whether value is openNDS's gatewayname for name: name itself, or (9.x and later) name with
    the node's MAC added, "<name> Node:02cc00000001 "."""
    return value == name or re.fullmatch(re.escape(name) + r" Node:[0-9a-fA-F]{12} ", value) \
        is not None


def raw_field(text, key):
    """A value of openNDS's client details as it sent it (still URL-encoded)."""
    prefix = key + "="
    return next((pair[len(prefix):] for pair in text.split(", ") if pair.startswith(prefix)), "")


def gateway_hash(encoded_name):
    """authmon's gatewayhash: the sha256 hex digest of the URL-encoded gatewayname, as openNDS
    encodes it (and puts it in the fas)."""
    return hashlib.sha256(encoded_name.encode("utf-8")).hexdigest()


def gateway_venue(slug):
    """The venue with an openNDS gateway whose address names slug; 404 otherwise."""
    with services().engine.connect() as conn:
        row = conn.execute(select(venue).where(venue.c.slug == slug[:40],
                                               venue.c.opennds_gateway.is_not(None),
                                               venue.c.opennds_faskey.is_not(None))).first()
    if row is None:
        abort(404)
    return row


# --- the guest's side ---------------------------------------------------------------------------

@bp.get("/opennds/<slug>/")
def arrival(slug):
    """A guest of the venue's gateway: keep what the gateway says about it, show the form.

    openNDS sends a browser it has let in already back here with `status=authenticated` and its
    `redir`: the "you are online" page offers that address."""
    row = gateway_venue(slug)
    if request.args.get("status") == "authenticated":
        return redirect(url_for("guest.index", status="authenticated",
                                redir=request.args.get("redir", "")[:opennds.MAX_ORIGIN_LENGTH]),
                        code=303)
    if "fas" not in request.args:
        return redirect(url_for("guest.index"), code=303)
    text = decrypt(request.args.get("fas"), request.args.get("iv"), row.opennds_faskey)
    accepted = accept(text, row) if text else None
    if accepted is None:
        if hit(IGNORED_LOGGED, "opennds-ignored", request.remote_addr or ""):  # no log flood
            log.warning("openNDS gateway of venue %s: ignored a fas that is not its own from %s",
                        row.slug, request.remote_addr)
    else:
        context, (gatewayhash, node_mac) = accepted
        note_node(services().engine, row.id, gatewayhash, node_mac)
        reoffer(services().engine, row.id, context["mac"], context["token"])
        routers.remember(context)
    return redirect(url_for("guest.index"), code=303)


def reoffer(engine, venue_id, mac, token):
    """The gateway sent a device here that has a live session at its venue: the gateway forgot it
    (a reboot, an openNDS restart; openNDS then gives the device a new token). Offer the session
    again, by that new token. The same fas again (a reload, or a replay by someone who saw it go
    by) changes nothing."""
    with storage.begin(engine) as conn:
        now = utcnow()
        live = conn.execute(select(access_session.c.id, access_session.c.verification_id)
                            .join(verification,
                                  verification.c.id == access_session.c.verification_id)
                            .where(access_session.c.mac == mac,
                                   access_session.c.venue_id == venue_id,
                                   access_session.c.ended_at.is_(None),
                                   access_session.c.ends_at > now,
                                   verification.c.gateway_token != token)).first()
        if live is None:
            return
        conn.execute(update(verification).where(verification.c.id == live.verification_id)
                     .values(gateway_token=token))
        conn.execute(update(access_session).where(access_session.c.id == live.id)
                     .values(firewall_at=None))
    log.info("openNDS gateway of venue id %s: %s came back with its session live; offered again",
             venue_id, mac)


def gateway_token():
    """The token the guest's openNDS gateway lets its device in by, or None (no such gateway)."""
    saved = routers.context()
    return saved.get("token") if saved and saved.get("kind") == "opennds" else None


def next_url(row):
    """For the wait page of verification row: the gateway's /opennds_auth/ for this browser's
    device, when it came through a remote openNDS gateway; else None."""
    saved = routers.context()
    if not saved or saved.get("kind") != "opennds" or saved["mac"] != row.mac or \
            saved["token"] != row.gateway_token:
        return None
    return opennds.auth_url_for(saved["gateway"], saved["token"], saved.get("dst", ""))


# --- the gateway's poll -------------------------------------------------------------------------

@bp.post("/opennds/<slug>/")
@limiter.exempt  # a gateway polls every 10 s; it is known by its gatewayhash
def poll(slug):
    """authmon: the guests to let in (payload "none"), or which it let in ("* rhid …")."""
    row = gateway_venue(slug)
    engine = services().engine
    node = known_node(engine, row.id, request.form.get("gatewayhash", ""))
    action = request.form.get("auth_get", "")
    try:
        payload = base64.b64decode(request.form.get("payload", ""), validate=True).decode()
    except (binascii.Error, ValueError):
        return "ERROR: unreadable payload\n", 400, TEXT
    if action not in ("clear", "list", "view"):
        return "ERROR: unknown auth_get\n", 400, TEXT
    if node is None:  # not (yet) one of the venue's gateway devices: nothing for it
        log.debug("openNDS gateway of venue %s: a poll from an unknown node at %s", row.slug,
                  request.remote_addr)
        return "ack" if payload.startswith("*") or action == "clear" else "* ", 200, TEXT
    note_seen(engine, node)
    if payload.startswith("*"):
        acknowledge(engine, row.id, payload[1:].split()[:MAX_ACKS])
        return "ack", 200, TEXT
    if action == "clear":
        return "ack", 200, TEXT
    entries = pending(engine, row.id)
    if action == "list":  # older authmon: "list" hands the entries over, and no ack follows
        acknowledge(engine, row.id, [unquote(entry).split()[0] for entry in entries])
    return "* " + " ".join(entries), 200, TEXT


def pending(engine, venue_id, now=None):
    """authmon's entries for the venue's live sessions its gateway has not taken, oldest first,
    as many as authmon reads."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            select(verification.c.gateway_token, access_session.c.ends_at)
            .join(verification, verification.c.id == access_session.c.verification_id)
            .where(access_session.c.venue_id == venue_id, access_session.c.ended_at.is_(None),
                   access_session.c.ends_at > now, access_session.c.firewall_at.is_(None),
                   verification.c.gateway_token.is_not(None))
            .order_by(access_session.c.started_at).limit(50)).all()
    entries, length = [], 0
    for row in rows:
        minutes = max(1, math.ceil(seconds_until(row.ends_at) / 60))
        entry = quote(f"{row.gateway_token} {minutes} 0 0 0 0", safe="")
        if length + len(entry) + 1 > MAX_AUTHLIST:
            break
        entries.append(entry)
        length += len(entry) + 1
    return entries


def acknowledge(engine, venue_id, tokens):
    """The gateway let in the devices of tokens: their live sessions at the venue are online."""
    tokens = [token for token in tokens if _TOKEN.fullmatch(token)]
    if not tokens:
        return
    with storage.begin(engine) as conn:
        now = utcnow()
        done = conn.execute(
            update(access_session)
            .where(access_session.c.venue_id == venue_id, access_session.c.ended_at.is_(None),
                   access_session.c.firewall_at.is_(None),
                   access_session.c.verification_id.in_(
                       select(verification.c.id).where(verification.c.gateway_token.in_(tokens),
                                                       verification.c.venue_id == venue_id)))
            .values(firewall_at=now))
    log.info("openNDS gateway of venue id %s let in %d device(s)", venue_id, done.rowcount)


def known_node(engine, venue_id, gatewayhash):
    """The venue's gateway node whose polls carry gatewayhash, or None."""
    if not _TOKEN.fullmatch(gatewayhash):
        return None
    with engine.connect() as conn:
        return conn.execute(select(opennds_node).where(
            opennds_node.c.gatewayhash == gatewayhash,
            opennds_node.c.venue_id == venue_id)).first()


def note_node(engine, venue_id, gatewayhash, mac):
    """Learn (or refresh, at most once a minute) a gateway node of the venue from a fas only its
    faskey could make."""
    now = utcnow()
    known = known_node(engine, venue_id, gatewayhash)
    if known is not None and known.gatewaymac == mac and now - known.seen_at < SEEN_EVERY:
        return
    try:
        with storage.begin(engine) as conn:
            done = conn.execute(update(opennds_node)
                                .where(opennds_node.c.gatewayhash == gatewayhash,
                                       opennds_node.c.venue_id == venue_id)
                                .values(gatewaymac=mac, seen_at=now))
            if done.rowcount == 0:
                conn.execute(opennds_node.insert().values(
                    gatewayhash=gatewayhash, venue_id=venue_id, gatewaymac=mac,
                    first_seen_at=now, seen_at=now))
    except IntegrityError:  # another request learnt it at the same moment
        pass


def note_seen(engine, node):
    """Write down that the node polled (at most once a minute)."""
    now = utcnow()
    if now - node.seen_at < SEEN_EVERY:
        return
    with storage.begin(engine) as conn:
        conn.execute(update(opennds_node)
                     .where(opennds_node.c.gatewayhash == node.gatewayhash,
                            opennds_node.c.seen_at < now - SEEN_EVERY)
                     .values(seen_at=now))


def nodes(engine):
    """{venue id: [(gateway MAC, last seen)]} of the nodes callpass has heard from."""
    found = {}
    with engine.connect() as conn:
        for row in conn.execute(select(opennds_node).order_by(opennds_node.c.first_seen_at)):
            found.setdefault(row.venue_id, []).append((row.gatewaymac, row.seen_at))
    return found
