"""The audit log: every admin action — who, what, when, from where.

Details name what changed (setting keys, a session's MAC, a date range), never a secret's value.
They are stored as a JSON object (data, so that the admin page can say them in the admin's
language); an admin's name (from the commands) and entries of older versions are plain text.
"""

import json

from sqlalchemy import select

from . import storage
from .storage import audit, utcnow

# Actions, as stored; the admin page shows them in words.
LOGIN = "login"
LOGIN_FAILED = "login-failed"
LOGIN_LOCKED = "login-locked"
LOGOUT = "logout"
SETTINGS = "settings"
SESSION_END = "session-end"
SESSION_EXTEND = "session-extend"
EXPORT = "export"
PURGE = "purge"
ADMIN_ADD = "admin-add"
ADMIN_PASSWORD = "admin-password"
ADMIN_REMOVE = "admin-remove"
BLOCK = "block"
UNBLOCK = "unblock"
VENUE_ADD = "venue-add"
VENUE_CHANGE = "venue-change"

MAX_DETAIL = 1000


def record(engine, admin, remote_addr, action, detail="", venue_id=None):
    """Add one entry to the audit log; detail is a text or a dict of JSON values; venue_id is
    the acting admin's venue (None: a chain admin, or the shell)."""
    if isinstance(detail, dict):
        detail = json.dumps(detail, ensure_ascii=False, sort_keys=True)
    with storage.begin(engine) as conn:
        conn.execute(audit.insert().values(
            at=utcnow(), admin=(admin or "-")[:64], remote_addr=(remote_addr or "-")[:45],
            action=action, detail=detail[:MAX_DETAIL], venue_id=venue_id))


def entries(engine, limit=100, before_id=None, venue_id=None):
    """The newest entries first, at most limit, older than before_id when given; only those of
    one venue's admins when venue_id is given."""
    query = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if venue_id is not None:
        query = query.where(audit.c.venue_id == venue_id)
    if before_id is not None:
        query = query.where(audit.c.id < before_id)
    with engine.connect() as conn:
        return conn.execute(query).all()


def data_of(row):
    """The entry's detail as a dict, or None when it is plain text."""
    if not row.detail.startswith("{"):
        return None
    try:
        data = json.loads(row.detail)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
