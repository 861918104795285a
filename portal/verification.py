"""Verifications: a guest's phone waiting for its call, and what happens when the call arrives.

States: pending -> confirmed (the provider reported the call in time)
                -> expired   (the window closed without a call)
        failed               (the provider refused to give a number to call)
        confirmed with no call_number: a remembered device let back in without a call

A pending verification whose window has closed reads as expired at once (`state_of`); the
maintenance thread writes the state (`expire_overdue`), nothing else does.

The provider's notification names only the phone the call came from, so at most one device waits
for a call from a given phone at a time (`waiting_for`): a second device asking for the same
number is refused until the first one's window closes (`PhoneWaiting`). Otherwise whoever typed
someone else's number would get online on that person's call.
"""

import logging
import secrets
import threading
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import and_, bindparam, case, or_, select, update

from . import sessions, storage
from .provider import ProviderError
from .storage import MAIN_VENUE, access_session, blocked, utcnow, verification

log = logging.getLogger(__name__)

PENDING, CONFIRMED, EXPIRED, FAILED = "pending", "confirmed", "expired", "failed"

# The statements every guest's sign-in runs, built once with their values as bind parameters:
# building a statement costs SQLAlchemy several times what running it costs SQLite.
WAITING_FOR = (select(verification)
               .where(verification.c.phone == bindparam("phone"),
                      verification.c.state == PENDING,
                      verification.c.expires_at > bindparam("now"))
               .order_by(verification.c.id))
LAST_ATTEMPT = (select(verification)
                .where(verification.c.phone == bindparam("phone"),
                       verification.c.mac == bindparam("mac"))
                .order_by(verification.c.id.desc()).limit(1))
BY_TOKEN = select(verification).where(verification.c.token == bindparam("token"))
BY_ID = select(verification).where(verification.c.id == bindparam("verification_id"))
SESSION_OF = (select(access_session)
              .where(access_session.c.verification_id == bindparam("verification_id"))
              .order_by(access_session.c.id.desc()).limit(1))
# The verifications for a phone whose window contains a call: still pending, or past the
# window by now (the provider's notification may come late), not confirmed or failed.
CALLED_IN_WINDOW = (select(verification)
                    .where(verification.c.phone == bindparam("phone"),
                           verification.c.state.in_((PENDING, EXPIRED)),
                           verification.c.created_at <= bindparam("latest_start"),
                           verification.c.expires_at >= bindparam("earliest_end"))
                    .order_by(verification.c.id))
CONFIRM = (update(verification)
           .where(verification.c.id == bindparam("verification_id"),
                  verification.c.state.in_((PENDING, EXPIRED)))
           .values(state=CONFIRMED, confirmed_at=bindparam("now")))
# The provider's clock and the gateway's may differ this much: a call's ts matches a window
# widened by it at both ends. (The gateway must keep its clock by NTP: the log needs it too.)
CLOCK_SLACK = timedelta(seconds=60)
IS_BLOCKED = select(blocked.c.id).where(or_(
    (blocked.c.kind == "phone") & (blocked.c.value == bindparam("phone")),
    (blocked.c.kind == "mac") & (blocked.c.value == bindparam("device")))).limit(1)
CALLED_RECENTLY = select(verification.c.id).where(
    verification.c.phone == bindparam("phone"), verification.c.mac == bindparam("mac"),
    verification.c.state == CONFIRMED, verification.c.call_number != "",
    verification.c.confirmed_at >= bindparam("since")).limit(1)


class PhoneWaiting(Exception):
    """Another device is already waiting for a call from this phone (until `row.expires_at`)."""

    def __init__(self, row):
        super().__init__(f"{row.phone} is waiting for a call on another device")
        self.row = row


class StillAsking(Exception):
    """This device already has a request asking the provider and one waiting for it, or the
    one asking took longer than a call may take."""


class AskingLocks:
    """A device asks the provider for one number at a time, in this process.

    A double tap posts the form twice at once: the second request waits for the first (holding
    no provider slot), then finds its wait page, so the provider is asked once. Any further
    request from a device that has one asking and one waiting is refused at once: one guest's
    parallel posts can hold neither many threads nor many provider slots, and each attempt is
    counted by the rate limit before the next one asks. A lock exists only while someone holds
    or waits for it. Between processes (several `serve`s on one database) `PhoneWaiting`
    decides who waits for a phone.
    """

    def __init__(self):
        self._guard = threading.Lock()
        self._locks = {}  # mac -> [threading.Lock, requests holding or waiting for it (1 or 2)]

    @contextmanager
    def hold(self, mac, timeout):
        """Hold the device's lock, waiting at most timeout seconds behind its other request
        (StillAsking beyond, or at once when a request already waits). Yields whether another
        request held it first: then the database may have changed meanwhile."""
        with self._guard:
            entry = self._locks.setdefault(mac, [threading.Lock(), 0])
            if entry[1] >= 2:
                raise StillAsking(f"{mac} has a request asking the provider and one waiting")
            entry[1] += 1
        try:
            waited = not entry[0].acquire(blocking=False)
            if waited and not entry[0].acquire(timeout=timeout):
                raise StillAsking(f"{mac}'s other request is still asking the provider")
            try:
                yield waited
            finally:
                entry[0].release()
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[mac]


def waiting_for(conn, phone, now=None):
    """The verification waiting for a call from phone right now, or None (at most one)."""
    return conn.execute(WAITING_FOR, {"phone": phone, "now": now or utcnow()}).first()


def last_attempt(conn, phone, mac):
    """The newest verification this device started for phone, or None."""
    return conn.execute(LAST_ATTEMPT, {"phone": phone, "mac": mac}).first()


def start_verification(engine, provider, phone, mac, ip, minutes, venue_id=MAIN_VENUE,
                       gateway_token=None):
    """Ask the provider for a number to call and record a pending verification at a venue
    (gateway_token: a remote openNDS gateway's token for the device); returns its row.

    A provider error is recorded as a failed verification and raised again for the view.
    PhoneWaiting when another device started waiting for phone while the provider answered.
    """
    token = secrets.token_urlsafe(18)
    values = dict(token=token, phone=phone, mac=mac, ip=ip, venue_id=venue_id,
                  gateway_token=gateway_token)
    try:
        call_number = provider.wait_call(phone)
    except ProviderError as exc:
        with storage.begin(engine) as conn:
            now = utcnow()
            conn.execute(verification.insert().values(
                **values, call_number="", state=FAILED, failure=str(exc)[:500],
                failure_code=getattr(exc, "code", None), created_at=now, expires_at=now))
        raise
    with storage.begin(engine) as conn:
        # The window starts when the guest is shown the number, not when the provider was asked.
        now = utcnow()
        waiting = waiting_for(conn, phone, now)
        if waiting is not None:
            raise PhoneWaiting(waiting)
        conn.execute(verification.insert(), dict(
            values, call_number=call_number, state=PENDING,
            created_at=now, expires_at=now + timedelta(minutes=minutes)))
        return conn.execute(BY_TOKEN, {"token": token}).first()


def find(engine, token):
    """The verification with this token, or None (read only: see `state_of`)."""
    with engine.connect() as conn:
        return conn.execute(BY_TOKEN, {"token": token}).first()


def state_of(row):
    """The state of a verification as of now: a pending one past its window is expired."""
    if row.state == PENDING and row.expires_at <= utcnow():
        return EXPIRED
    return row.state


def state_as_of(now):
    """state_of in SQL, labelled state: a pending verification past its window reads expired."""
    return case((and_(verification.c.state == PENDING, verification.c.expires_at <= now), EXPIRED),
                else_=verification.c.state).label("state")


def session_of(engine, row):
    """The newest access session a confirmed verification opened, or None."""
    with engine.connect() as conn:
        return conn.execute(SESSION_OF, {"verification_id": row.id}).first()


def expire_overdue(engine):
    """Mark pending verifications whose window has closed as expired (the maintenance thread)."""
    with storage.begin(engine) as conn:
        conn.execute(update(verification)
                     .where(verification.c.state == PENDING, verification.c.expires_at <= utcnow())
                     .values(state=EXPIRED))


def confirm_call(conn, phone, called_at, rules):
    """The provider reports a call from phone at called_at (its ts): confirm the verification
    whose window contains the call, and open its session.

    The window decides, not "waiting now": a notification that comes late still opens the
    device that was waiting when the call was made, and never a device that asked for the
    number afterwards. When the windows of two devices contain the call (one's closed just as
    the other's opened, within CLOCK_SLACK), the call could be either's and opens nobody. One
    device's several windows (it asked again as its window closed) are that device's: its
    newest is confirmed. Only when no window contains the call does the device waiting now get
    it, with a warning: the gateway's clock is off by more than CLOCK_SLACK (the callback
    already refuses a ts more than callback.max_age_seconds away).

    rules(venue_id) gives the [portal] settings of a venue (session_minutes, devices_per_phone).
    Runs inside the caller's transaction (the callback records the notification in the same one),
    so a verification is confirmed together with its session or not at all. Returns the
    confirmed verification rows (empty when the call is nobody's).
    """
    now = utcnow()
    candidates = conn.execute(CALLED_IN_WINDOW, {"phone": phone,
                                                 "latest_start": called_at + CLOCK_SLACK,
                                                 "earliest_end": called_at - CLOCK_SLACK}).all()
    if not candidates:
        candidates = conn.execute(WAITING_FOR, {"phone": phone, "now": now}).all()
        if candidates:
            log.warning("a call at %s matches no verification's window, but %s waits for it "
                        "now: is the gateway's clock right (NTP)?", called_at.isoformat(),
                        candidates[0].mac)
    if len({row.mac for row in candidates}) != 1:
        return []
    row = candidates[-1]
    if is_blocked(conn, phone, row.mac):
        # Blocked while it waited (a block during the provider's answer): the call opens nothing.
        return []
    if conn.execute(CONFIRM, {"verification_id": row.id, "now": now}).rowcount != 1:
        return []  # another transaction got there first
    portal = rules(row.venue_id)
    sessions.grant_access(conn, row.mac, row.ip, row.phone, portal["session_minutes"],
                          verification_id=row.id, devices_per_phone=portal["devices_per_phone"],
                          now=now, venue_id=row.venue_id)
    return [row]


def is_blocked(conn, phone, mac):
    """Whether the phone or the device is on the admin's block list (the kinds blocklist.PHONE
    and blocklist.MAC; blocklist imports this module, and asks it)."""
    return conn.execute(IS_BLOCKED, {"phone": phone, "device": mac}).first() is not None


def remember_device(engine, phone, mac, ip, days, session_minutes, devices_per_phone,
                    venue_id=MAIN_VENUE, gateway_token=None):
    """Let mac back in without a call when it verified phone by a call within `days` (0 = never),
    at any venue of the chain; the new session is at venue_id.

    The sign-in is recorded as a confirmed verification with an empty call_number (the
    identification log shows it), and a session is opened, in one transaction. Only real calls
    count towards the window, so a device is asked to call again at least every `days` days.
    Returns the new row (or, when the device is online under phone already, the row that let
    it in), or None when the device is not remembered.
    """
    if days < 1:
        return None
    token = secrets.token_urlsafe(18)
    with storage.begin(engine) as conn:
        now = utcnow()
        known = conn.execute(CALLED_RECENTLY, {"phone": phone, "mac": mac,
                                               "since": now - timedelta(days=days)}).first()
        if known is None:
            return None
        # Already online under this phone: its own page again, no new rows (a device posting
        # the form over and over must not fill the log or the firewall's queue).
        online = conn.execute(sessions.ACTIVE_OF_MAC, {"device": mac, "now": now}).first()
        if online is not None and online.phone == phone and online.verification_id is not None:
            return conn.execute(BY_ID, {"verification_id": online.verification_id}).first()
        verification_id = conn.execute(verification.insert(), dict(
            token=token, phone=phone, mac=mac, ip=ip, call_number="", state=CONFIRMED,
            created_at=now, expires_at=now, confirmed_at=now, venue_id=venue_id,
            gateway_token=gateway_token)).inserted_primary_key[0]
        sessions.grant_access(conn, mac, ip, phone, session_minutes,
                              verification_id=verification_id,
                              devices_per_phone=devices_per_phone, now=now, venue_id=venue_id)
        return conn.execute(BY_TOKEN, {"token": token}).first()


def is_remembered(row):
    """Whether a verification let a remembered device in without a call."""
    return row.state == CONFIRMED and not row.call_number


def seconds_left(row):
    """Seconds until a pending verification expires (0 once it has)."""
    if row.state != PENDING:
        return 0
    return max(0, int((row.expires_at - utcnow()).total_seconds()))
