"""Verifications: a guest's phone waiting for its call, and what happens when the call arrives.

States: pending -> confirmed (the provider reported the call in time)
                -> expired   (the window closed without a call)
        failed               (the provider refused to give a number to call)
        confirmed with no call_number: a remembered device let back in without a call
"""

import secrets
from datetime import timedelta

from sqlalchemy import select, update

from . import sessions
from .provider import ProviderError
from .storage import utcnow, verification

PENDING, CONFIRMED, EXPIRED, FAILED = "pending", "confirmed", "expired", "failed"


def start_verification(engine, provider, phone, mac, ip, minutes):
    """Ask the provider for a number to call and record a pending verification; returns its row.

    A provider error is recorded as a failed verification and raised again for the view.
    """
    now = utcnow()
    values = dict(token=secrets.token_urlsafe(18), phone=phone, mac=mac, ip=ip,
                  created_at=now, expires_at=now + timedelta(minutes=minutes))
    try:
        call_number = provider.wait_call(phone)
    except ProviderError as exc:
        with engine.begin() as conn:
            conn.execute(verification.insert().values(
                **values, call_number="", state=FAILED, failure=str(exc)[:500]))
        raise
    with engine.begin() as conn:
        conn.execute(verification.insert().values(**values, call_number=call_number, state=PENDING))
    return find(engine, values["token"])


def find(engine, token):
    """The verification with this token (its state brought up to date), or None.

    The wait page polls this, so it only writes when this one verification's window has just
    closed; the maintenance thread expires the rest.
    """
    query = select(verification).where(verification.c.token == token)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.state != PENDING or row.expires_at > utcnow():
        return row
    with engine.begin() as conn:
        conn.execute(update(verification)
                     .where(verification.c.id == row.id, verification.c.state == PENDING)
                     .values(state=EXPIRED))
        return conn.execute(query).first()


def expire_overdue(engine):
    """Mark pending verifications whose window has closed as expired."""
    with engine.begin() as conn:
        conn.execute(update(verification)
                     .where(verification.c.state == PENDING, verification.c.expires_at <= utcnow())
                     .values(state=EXPIRED))


def confirm_call(engine, firewall, phone, session_minutes, devices_per_phone=3):
    """The provider reports a call from phone: confirm its pending verifications, open sessions.

    Returns the confirmed verification rows (empty when nobody with that phone is waiting).
    """
    expire_overdue(engine)
    now = utcnow()
    with engine.begin() as conn:
        waiting = conn.execute(select(verification).where(
            verification.c.phone == phone, verification.c.state == PENDING,
            verification.c.expires_at > now)).all()
        if waiting:
            conn.execute(update(verification)
                         .where(verification.c.id.in_([row.id for row in waiting]))
                         .values(state=CONFIRMED, confirmed_at=now))
    for row in waiting:
        sessions.grant_access(engine, firewall, row.mac, row.ip, row.phone, session_minutes,
                              verification_id=row.id, devices_per_phone=devices_per_phone)
    return waiting


def remember_device(engine, firewall, phone, mac, ip, days, session_minutes, devices_per_phone=3):
    """Let mac back in without a call when it verified phone by a call within `days` (0 = never).

    The sign-in is recorded as a confirmed verification with an empty call_number (the
    identification log shows it), and a session is opened. Only real calls count towards the
    window, so a device is asked to call again at least every `days` days. Returns the new row,
    or None when the device is not remembered.
    """
    if days < 1:
        return None
    now = utcnow()
    with engine.begin() as conn:
        known = conn.execute(select(verification.c.id).where(
            verification.c.phone == phone, verification.c.mac == mac,
            verification.c.state == CONFIRMED, verification.c.call_number != "",
            verification.c.confirmed_at >= now - timedelta(days=days)).limit(1)).first()
        if known is None:
            return None
        token = secrets.token_urlsafe(18)
        verification_id = conn.execute(verification.insert().values(
            token=token, phone=phone, mac=mac, ip=ip, call_number="", state=CONFIRMED,
            created_at=now, expires_at=now, confirmed_at=now)).inserted_primary_key[0]
    sessions.grant_access(engine, firewall, mac, ip, phone, session_minutes,
                          verification_id=verification_id, devices_per_phone=devices_per_phone)
    return find(engine, token)


def is_remembered(row):
    """Whether a verification let a remembered device in without a call."""
    return row.state == CONFIRMED and not row.call_number


def seconds_left(row):
    """Seconds until a pending verification expires (0 once it has)."""
    if row.state != PENDING:
        return 0
    return max(0, int((row.expires_at - utcnow()).total_seconds()))
