"""Access sessions: which device (MAC) may use the internet until when — the desired state of the
firewall.

The database is the record (and the legal log). Every change of a MAC's sessions queues the MAC in
`firewall_change` in the same transaction; the firewall worker (`firewall_sync`) applies it. So
nothing here ever waits on the firewall, and a firewall failure never loses or doubles a session.
A session counts as online once the worker has confirmed the firewall let its MAC through
(`firewall_at`).
"""

import math
import time
from datetime import timedelta

from sqlalchemy import and_, bindparam, case, select, update

from . import storage
from .config import MAX_SESSION_MINUTES
from .storage import MAIN_VENUE, access_session, firewall_change, utcnow

# A session is open while it has no end recorded and its time has not run out. One whose time
# ran out reads as ended "expired" at its ends_at at once; the maintenance thread writes that down
# (`close_expired`), and nothing else ends it: ending it again would put a later end and a wrong
# reason in the identification log.
def is_open(now):
    """The SQL condition of a session open at now."""
    return and_(access_session.c.ended_at.is_(None), access_session.c.ends_at > now)


# The statements of every sign-in and every probe, built once (see verification.WAITING_FOR).
END_OPEN_OF_MAC = (update(access_session)
                   .where(access_session.c.mac == bindparam("device"),
                          is_open(bindparam("now")))
                   .values(ended_at=bindparam("now"), end_reason="replaced"))
OPEN_OF_PHONE = (select(access_session.c.id, access_session.c.mac)
                 .where(access_session.c.phone == bindparam("phone"),
                        access_session.c.venue_id == bindparam("venue"),
                        is_open(bindparam("now")))
                 .order_by(access_session.c.started_at.desc(), access_session.c.id.desc()))
END_OPEN = (update(access_session)
            .where(access_session.c.id == bindparam("session_id"),
                   is_open(bindparam("now")))
            .values(ended_at=bindparam("now"), end_reason=bindparam("reason")))
ACTIVE_OF_MAC = (select(access_session)
                 .where(access_session.c.mac == bindparam("device"),
                        is_open(bindparam("now")))
                 .order_by(access_session.c.ends_at.desc()))


def ran_out_unrecorded(now):
    """The SQL condition of a session whose time ran out before now, not yet closed."""
    return and_(access_session.c.ended_at.is_(None), access_session.c.ends_at <= now)


def ended_as_of(now):
    """A session's end as it reads at now (NULL while open), labelled ended_at: a session whose
    time ran out ended at its ends_at, whether or not the maintenance thread wrote it yet."""
    return case((ran_out_unrecorded(now), access_session.c.ends_at),
                else_=access_session.c.ended_at).label("ended_at")


def end_reason_as_of(now):
    """Why a session ended, as it reads at now (see ended_as_of), labelled end_reason."""
    return case((ran_out_unrecorded(now), "expired"),
                else_=access_session.c.end_reason).label("end_reason")


def queue_firewall(conn, mac, now):
    """Tell the firewall worker that mac's sessions changed (inside the changing transaction)."""
    conn.execute(firewall_change.insert(), {"mac": mac, "queued_at": now})


def grant_access(conn, mac, ip, phone, minutes, verification_id=None, devices_per_phone=0,
                 now=None, venue_id=MAIN_VENUE):
    """Open a session of `minutes` for mac at a venue (ending any open one of that MAC, at any
    venue: a device is in one place at a time); returns its id.

    Runs inside the caller's transaction. With devices_per_phone, the phone's oldest sessions
    at that venue beyond that many are ended.
    """
    now = now or utcnow()
    conn.execute(END_OPEN_OF_MAC, {"device": mac, "now": now})
    session_id = conn.execute(access_session.insert(), dict(
        verification_id=verification_id, mac=mac, ip=ip, phone=phone, venue_id=venue_id,
        started_at=now, ends_at=now + timedelta(minutes=minutes))).inserted_primary_key[0]
    queue_firewall(conn, mac, now)
    limit_devices(conn, phone, devices_per_phone, now, venue_id)
    return session_id


def limit_devices(conn, phone, devices, now, venue_id=MAIN_VENUE):
    """End the oldest open sessions of phone at a venue beyond `devices` (0 = no limit); returns
    how many."""
    if devices < 1:
        return 0
    open_rows = conn.execute(OPEN_OF_PHONE,
                             {"phone": phone, "venue": venue_id, "now": now}).all()
    for row in open_rows[devices:]:
        end_open(conn, row.id, row.mac, "device-limit", now)
    return max(0, len(open_rows) - devices)


def end_open(conn, session_id, mac, reason, now):
    """End an open session inside the caller's transaction (the firewall worker is told through
    firewall_change); False when it was not open."""
    ended = conn.execute(END_OPEN, {"session_id": session_id, "now": now,
                                    "reason": reason}).rowcount
    if ended:
        queue_firewall(conn, mac, now)
    return ended == 1


def end_session(engine, session_id, reason):
    """End an open session now; the firewall worker revokes its MAC. False when not open."""
    with storage.begin(engine) as conn:
        now = utcnow()
        row = conn.execute(select(access_session.c.mac)
                           .where(access_session.c.id == session_id)).first()
        return row is not None and end_open(conn, session_id, row.mac, reason, now)


def extend_session(engine, session_id, minutes):
    """Push an open session's end `minutes` further; the firewall worker applies the new time.
    Returns the new end, or None when the session was not open."""
    with storage.begin(engine) as conn:
        now = utcnow()
        row = conn.execute(select(access_session).where(access_session.c.id == session_id)).first()
        if row is None or row.ended_at is not None or row.ends_at <= now:
            return None
        # The firewall's kernel timeout tops out at 31 days; never promise more than that.
        ends = min(max(row.ends_at, now) + timedelta(minutes=minutes),
                   now + timedelta(minutes=MAX_SESSION_MINUTES))
        conn.execute(update(access_session).where(access_session.c.id == session_id)
                     .values(ends_at=ends))
        queue_firewall(conn, row.mac, now)
    return ends


def active_session(engine, mac):
    """The open, unexpired session of mac (online or still connecting), or None."""
    now = utcnow()
    with engine.connect() as conn:
        return conn.execute(ACTIVE_OF_MAC, {"device": mac, "now": now}).first()


def is_online(session):
    """Whether a session row is open, unexpired and confirmed in the firewall."""
    return (session is not None and session.ended_at is None and session.ends_at > utcnow()
            and session.firewall_at is not None)


class OnlineCache:
    """mac -> its online session (or None), remembered for a second: probes come in bursts and
    must stay cheap. Cleared whenever the firewall worker applied a change in this process."""

    LIFE_SECONDS = 1.0
    MAX_ENTRIES = 50_000

    def __init__(self, engine):
        self.engine = engine
        self._entries = {}  # mac -> (time.monotonic() deadline, session row or None)

    def online_session(self, mac):
        """The open session of mac that the firewall lets through, or None."""
        now = time.monotonic()
        hit = self._entries.get(mac)
        if hit is not None and hit[0] > now:
            session = hit[1]
        else:
            session = active_session(self.engine, mac)
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {}
            self._entries[mac] = (now + self.LIFE_SECONDS, session)
        return session if is_online(session) else None

    def clear(self):
        self._entries = {}


def live_sessions(engine):
    """Every open, unexpired session."""
    now = utcnow()
    with engine.connect() as conn:
        return conn.execute(select(access_session).where(
            access_session.c.ended_at.is_(None), access_session.c.ends_at > now)).all()


def close_expired(engine):
    """Record sessions whose time ran out as ended (the kernel already dropped their MACs): the
    maintenance thread's job, the only writer of this."""
    with storage.begin(engine) as conn:
        result = conn.execute(
            update(access_session).where(ran_out_unrecorded(utcnow()))
            .values(ended_at=access_session.c.ends_at, end_reason="expired"))
    return result.rowcount


def seconds_until(moment):
    """Whole seconds from now until moment, rounded up (a MAC is never cut off early), at least 1."""
    return max(1, math.ceil((moment - utcnow()).total_seconds()))
