"""Phones and devices (MACs) an admin has blocked, each with a reason.

A blocked guest's attempt stops at the guest form (`is_blocked`, asked before the provider or the
firewall hear of it) and is shown a neutral message. Blocking also ends the open sessions and
the waiting verifications of that phone or device, so the block holds at once.
"""

from sqlalchemy import delete, select, update

from . import sessions, storage, verification
from .storage import access_session, blocked, utcnow
from .storage import verification as verification_table

PHONE, MAC = "phone", "mac"
MAX_REASON = 200


class AlreadyBlocked(Exception):
    """This phone or device is on the list already."""


def is_blocked(engine, phone, mac):
    """Whether phone (E.164) or mac is blocked."""
    with engine.connect() as conn:
        return verification.is_blocked(conn, phone, mac)


def block(engine, kind, value, reason, admin):
    """Block a phone (E.164) or a MAC (normalised), ending its open sessions and its waiting
    verifications. Returns how many sessions were ended; AlreadyBlocked when it is listed."""
    column = access_session.c.phone if kind == PHONE else access_session.c.mac
    waiting = verification_table.c.phone if kind == PHONE else verification_table.c.mac
    with storage.begin(engine) as conn:
        now = utcnow()  # inside the transaction: a session opened just before is ended after it
        if conn.execute(select(blocked.c.id).where(blocked.c.kind == kind,
                                                   blocked.c.value == value)).first():
            raise AlreadyBlocked(value)
        conn.execute(blocked.insert().values(kind=kind, value=value, reason=reason[:MAX_REASON],
                                             created_at=now, created_by=admin or "-"))
        conn.execute(update(verification_table)
                     .where(waiting == value, verification_table.c.state == verification.PENDING,
                            verification_table.c.expires_at > now)
                     .values(state=verification.FAILED, failure="blocked by an admin"))
        open_rows = conn.execute(select(access_session.c.id, access_session.c.mac).where(
            column == value, sessions.is_open(now))).all()
        for row in open_rows:
            sessions.end_open(conn, row.id, row.mac, "blocked", now)
    return len(open_rows)


def unblock(engine, block_id):
    """Take an entry off the list; the row it was (None when there is no such entry)."""
    with storage.begin(engine) as conn:
        row = conn.execute(select(blocked).where(blocked.c.id == block_id)).first()
        if row is not None:
            conn.execute(delete(blocked).where(blocked.c.id == block_id))
    return row


def entries(engine):
    """Every entry, newest first."""
    with engine.connect() as conn:
        return conn.execute(select(blocked).order_by(blocked.c.id.desc())).all()
