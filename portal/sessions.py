"""Access sessions: which device (MAC) may use the internet until when, kept in step with the firewall.

The database is the record (and the legal log); the firewall is told after each change. When the
firewall call fails the session stays recorded, and `sync_firewall` (run at `serve` start, every
minute while serving, and by `callpass fw-sync`) makes the firewall match again.
"""

import logging
from datetime import timedelta

from sqlalchemy import and_, select, update

from .config import MAX_SESSION_MINUTES
from .firewall import FirewallError
from .storage import access_session, utcnow

log = logging.getLogger(__name__)


def grant_access(engine, firewall, mac, ip, phone, minutes, verification_id=None,
                 devices_per_phone=0):
    """Open a session of `minutes` for mac (ending any open one of that MAC) and allow it.

    With devices_per_phone, the phone's oldest sessions beyond that many are ended.
    """
    now = utcnow()
    ends = now + timedelta(minutes=minutes)
    with engine.begin() as conn:
        conn.execute(
            update(access_session)
            .where(access_session.c.mac == mac, access_session.c.ended_at.is_(None))
            .values(ended_at=now, end_reason="replaced"))
        session_id = conn.execute(access_session.insert().values(
            verification_id=verification_id, mac=mac, ip=ip, phone=phone,
            started_at=now, ends_at=ends)).inserted_primary_key[0]
    try:
        firewall.allow(mac, minutes * 60)
    except FirewallError as exc:
        log.error("firewall refused to allow %s (session %s kept, next sync retries): %s",
                  mac, session_id, exc)
    limit_devices(engine, firewall, phone, devices_per_phone)
    return session_id


def limit_devices(engine, firewall, phone, devices):
    """End the oldest open sessions of phone beyond `devices` (0 = no limit)."""
    if devices < 1:
        return 0
    now = utcnow()
    with engine.connect() as conn:
        open_ids = conn.execute(
            select(access_session.c.id)
            .where(access_session.c.phone == phone, access_session.c.ended_at.is_(None),
                   access_session.c.ends_at > now)
            .order_by(access_session.c.started_at.desc(), access_session.c.id.desc())).scalars().all()
    for session_id in open_ids[devices:]:
        end_session(engine, firewall, session_id, "device-limit")
    return max(0, len(open_ids) - devices)


def end_session(engine, firewall, session_id, reason):
    """End an open session now and revoke its MAC (a MAC has at most one open session)."""
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(select(access_session).where(access_session.c.id == session_id)).first()
        if row is None or row.ended_at is not None:
            return False
        conn.execute(update(access_session).where(access_session.c.id == session_id)
                     .values(ended_at=now, end_reason=reason))
    firewall.revoke(row.mac)
    return True


def extend_session(engine, firewall, session_id, minutes):
    """Push an open session's end `minutes` further and tell the firewall the new time left."""
    with engine.begin() as conn:
        row = conn.execute(select(access_session).where(access_session.c.id == session_id)).first()
        if row is None or row.ended_at is not None:
            return False
        # The firewall's kernel timeout tops out at 31 days; never promise more than that.
        ends = min(max(row.ends_at, utcnow()) + timedelta(minutes=minutes),
                   utcnow() + timedelta(minutes=MAX_SESSION_MINUTES))
        conn.execute(update(access_session).where(access_session.c.id == session_id)
                     .values(ends_at=ends))
    firewall.allow(row.mac, seconds_until(ends))
    return True


def active_session(engine, mac):
    """The open, unexpired session of mac, or None."""
    now = utcnow()
    with engine.connect() as conn:
        return conn.execute(
            select(access_session)
            .where(access_session.c.mac == mac, access_session.c.ended_at.is_(None),
                   access_session.c.ends_at > now)
            .order_by(access_session.c.ends_at.desc())).first()


def live_sessions(engine):
    """Every open, unexpired session."""
    now = utcnow()
    with engine.connect() as conn:
        return conn.execute(select(access_session).where(
            access_session.c.ended_at.is_(None), access_session.c.ends_at > now)).all()


def close_expired(engine):
    """Record sessions whose time ran out as ended (the kernel already dropped their MACs)."""
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            update(access_session)
            .where(and_(access_session.c.ended_at.is_(None), access_session.c.ends_at <= now))
            .values(ended_at=access_session.c.ends_at, end_reason="expired"))
    return result.rowcount


def sync_firewall(engine, firewall):
    """Make the firewall match the database: allow live sessions, revoke everything else.

    Returns (allowed, revoked) counts.
    """
    close_expired(engine)
    wanted = {}
    for row in live_sessions(engine):
        wanted[row.mac] = max(wanted.get(row.mac, 0), seconds_until(row.ends_at))
    present = firewall.list()
    allowed = revoked = 0
    for mac, seconds in wanted.items():
        left = present.get(mac)
        # Re-allow when missing or when the kernel's clock for it is off by more than a minute.
        if mac not in present or left is None or abs(left - seconds) > 60:
            firewall.allow(mac, seconds)
            allowed += 1
    for mac in present:
        if mac not in wanted:
            firewall.revoke(mac)
            revoked += 1
    return allowed, revoked


def seconds_until(moment):
    """Whole seconds from now until moment, at least 1."""
    return max(1, int((moment - utcnow()).total_seconds()))
