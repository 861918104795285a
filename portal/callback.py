"""The provider's handler URL: a call-confirmation notification becomes an open firewall.

Order matters: authenticate (path token, then checksum), then freshness and replay, then domain work.
A notification that fails any check changes nothing but its own row in the notification log.
Guests can reach this URL too, so refusals are counted per sender (a guest by its MAC) and in
all, and past a limit answered 429 without a row (forgeries cannot fill the log); a genuine
notification is checked first and never counted, so forgeries from the provider's address cannot
get its real ones refused.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import time
from datetime import datetime, timezone

from flask import Blueprint, request
from limits import parse
from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError

from . import captive, phone, services, settings, storage, verification
from .extensions import hit, limiter
from .storage import notification, utcnow

log = logging.getLogger(__name__)

bp = Blueprint("callback", __name__)

# The fields recorded from a notification; anything else the provider adds is kept too, capped.
MAX_FIELDS = 30
MAX_VALUE = 200
REFUSALS = parse("30 per minute")        # refused notifications recorded per sender
ALL_REFUSALS = parse("300 per minute")   # and from every sender together
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
# Built once (see verification.WAITING_FOR): the verdict of a notification, once it is known.
SET_VERDICT = (update(notification).where(notification.c.id == bindparam("notification_id"))
               .values(verdict=bindparam("new_verdict"), reason=bindparam("new_reason")))


@bp.route("/callback/smsc/<token>", methods=["GET", "POST"])
@limiter.exempt  # counted in reject(), after authentication
def smsc(token):
    """Handle one SMSC notification; 200 "OK" when genuine, 403 when not."""
    svc = services()
    cfg = svc.config["callback"]
    fields = notification_fields(cfg["secret"])
    record = dict(fields=fields, phone=None, ts=None)

    if not cfg["token"] or not hmac.compare_digest(token.encode(), cfg["token"].encode()):
        return reject(record, 403, "wrong handler token")
    if cfg["signature"] != "none" and not has_valid_checksum(
            fields, request.values.getlist(cfg["signature"])[:4], cfg["signature"], cfg["secret"]):
        return reject(record, 403, f"missing or wrong {cfg['signature']} checksum")

    caller = phone.from_provider(fields.get("phone"))
    if caller is None:
        return reject(record, 400, "no usable phone field")
    record["phone"] = caller
    try:
        ts = int(fields.get("ts", ""))
    except ValueError:
        return reject(record, 400, "no usable ts field")
    if abs(time.time() - ts) > cfg["max_age_seconds"]:  # its row keeps the ts in its fields
        return reject(record, 403, f"ts is {int(time.time() - ts)} s away from now")
    record["ts"] = ts
    if fields.get("waitcall") != "1":
        # Other events (delivery statuses, incoming SMS) share the handler URL: accept, do nothing.
        save(record, "ignored", "not a call-confirmation event")
        return ok()
    try:
        confirmed = record_call(svc.engine, record)
    except IntegrityError:
        # The unique index on (phone, ts) says this call was acted on already.
        save(record, "replay", "the same phone and ts were already acted on")
        return ok()
    if confirmed:
        svc.firewall_worker.wake()
    return ok()


def record_call(engine, record):
    """Confirm the caller's waiting verifications and log the notification, in one transaction.

    The notification row goes first: a second one with the same phone and ts fails on the
    unique index (IntegrityError) before anything else is written.
    """
    def rules(venue_id):  # the session rules of the waiting guest's venue
        return settings.current(venue_id)["portal"]

    with storage.begin(engine) as conn:
        notification_id = conn.execute(notification.insert(), dict(
            row_values(record), verdict="accepted", reason="")).inserted_primary_key[0]
        called_at = datetime.fromtimestamp(record["ts"], timezone.utc)
        confirmed = verification.confirm_call(conn, record["phone"], called_at, rules)
        if confirmed:
            verdict, reason = "accepted", f"confirmed {len(confirmed)} verification(s)"
        else:
            verdict, reason = "unmatched", "nobody with this phone is waiting for a call"
        conn.execute(SET_VERDICT, {"notification_id": notification_id, "new_verdict": verdict,
                                   "new_reason": reason})
    return confirmed


def notification_fields(secret):
    """The notification's fields, form over query string, capped; the secret itself is masked.

    The handler URL may carry the checksum secret (`…?md5=<secret>`), so a value equal to it is
    never stored.
    """
    fields = {}
    for source in (request.args, request.form):
        for key, value in list(source.items())[:MAX_FIELDS]:
            fields[key[:MAX_VALUE]] = "(secret)" if secret and value == secret else value[:MAX_VALUE]
    return fields


def has_valid_checksum(fields, given, kind, secret):
    """Whether one of the given md5/sha1 values is the digest of "phone:ts:secret" (constant-time).

    Several values may arrive when the handler URL's own `md5=<secret>` is kept in the query.
    """
    material = f"{fields.get('phone', '')}:{fields.get('ts', '')}:{secret}".encode()
    expected = hashlib.new(kind, material).hexdigest().encode()
    return any(hmac.compare_digest(value.lower().encode(), expected) for value in given)


def reject(record, status, reason):
    """Record a refused notification and answer with status; 429 and no row once its sender
    has been refused REFUSALS times, or everyone ALL_REFUSALS times (the row would only help
    someone fill the log)."""
    if not hit(REFUSALS, "callback-refused", sender()) or \
            not hit(ALL_REFUSALS, "callback-refused"):
        return "too many refused notifications", 429, TEXT
    log.warning("callback refused from %s: %s", request.remote_addr, reason)
    save(record, "rejected", reason)
    return reason, status, TEXT


def sender():
    """Who sent this request, for counting refusals: a device on the guest LAN by its MAC (a
    guest can take any number of addresses, not of MACs on its port); anyone else by its
    address, an IPv6 one by its /64 (one network's hosts can pick any address in it)."""
    ip = request.remote_addr or ""
    _ip, mac = captive.identify(services(), ip)
    if mac is not None:
        return mac
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ip


def row_values(record):
    """The notification log's columns for record, stamped now. Checksums are kept: not secrets."""
    return dict(received_at=utcnow(), remote_addr=request.remote_addr or "",
                phone=record["phone"], ts=record["ts"],
                fields=json.dumps(record["fields"], ensure_ascii=False, sort_keys=True))


def save(record, verdict, reason):
    """Add one row to the notification log."""
    with storage.begin(services().engine) as conn:
        conn.execute(notification.insert(), dict(row_values(record), verdict=verdict,
                                                 reason=reason))


def ok():
    return "OK", 200, TEXT
