"""Venue admin accounts: slow password hashes, the signed-in admin of a request, who may sign in,
and the per-account lock.

Passwords are stored only as werkzeug scrypt hashes. The login session lives in Flask's signed
cookie: the admin's name, the account's id and creation time, when they signed in, and the
account's session epoch. Signing out or a new password adds one to the epoch, which ends every
session of that admin on every browser (a copied cookie too); removing the account ends them as
well, and a new account given the same name later is another account: its id or creation time
differs, so it never takes the old account's cookies.

Guessing is slowed twice: per source address (admin.login_limit, in admin.py) and per account
(here). After FREE_ATTEMPTS failed attempts from browsers the account does not know, each further
attempt has to wait, longer each time (FIRST_LOCK, doubling, at most LONGEST_LOCK). A browser
where the admin signed in before carries a signed "known device" cookie and is not held by the
account's lock, so guesses from many addresses cannot keep the real admin out.
"""

import functools
import hashlib
import ipaddress
import re
import time
from datetime import timedelta

from flask import current_app, request, session
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from . import storage
from .storage import admin_user, utcnow

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200
SESSION_SECONDS = 12 * 3600  # a signed-in browser must sign in again after this
HASH_METHOD = "scrypt"  # werkzeug's scrypt:32768:8:1, about 0.1 s per check
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

FREE_ATTEMPTS = 5                      # failed attempts on an account before it makes clients wait
FIRST_LOCK = timedelta(minutes=1)      # the wait after FREE_ATTEMPTS failures; doubles each failure
LONGEST_LOCK = timedelta(hours=1)
FORGET_AFTER = timedelta(days=1)       # failures this old no longer count
DEVICE_COOKIE = "callpass_admin_device"
DEVICE_DAYS = 180                      # a browser stays known this long after its last sign-in
DEVICE_ACCOUNTS = 5                    # accounts one browser is remembered for


class AccountError(ValueError):
    """An admin account cannot be created or changed; the message says why."""


def check_name(name):
    """The name, if it is usable as an admin name; AccountError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AccountError("an admin name is 1-64 letters, digits, '.', '_', '@' or '-', "
                           "starting with a letter or digit")
    return name


def check_password(name, password):
    """Refuse passwords that are too short, too long or the same as the name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip().lower() == name.lower():
        raise AccountError("the password must not be the admin name")


def add_admin(engine, name, password, venue_id=None):
    """Create an admin account, of one venue or (venue_id None) of the whole chain; AccountError
    when the name is taken or the password too weak."""
    check_name(name)
    check_password(name, password)
    password_hash = generate_password_hash(password, method=HASH_METHOD)  # slow: before the lock
    with storage.begin(engine) as conn:
        if conn.execute(select(admin_user.c.id).where(admin_user.c.name == name)).first():
            raise AccountError(f"an admin named {name!r} already exists")
        conn.execute(admin_user.insert().values(
            name=name, password_hash=password_hash, created_at=utcnow(), venue_id=venue_id))


def set_password(engine, name, password):
    """Replace an admin's password: every session of theirs ends, browsers they used are no longer
    known, and the account's lock is lifted."""
    check_password(name, password)
    password_hash = generate_password_hash(password, method=HASH_METHOD)  # slow: before the lock
    with storage.begin(engine) as conn:
        result = conn.execute(admin_user.update().where(admin_user.c.name == name).values(
            password_hash=password_hash, session_epoch=admin_user.c.session_epoch + 1,
            failed_logins=0, last_failed_at=None))
    if result.rowcount == 0:
        raise AccountError(f"there is no admin named {name!r}")


class LastChainAdmin(AccountError):
    """Removing this admin would leave the chain without an admin of the whole chain."""


def remove_admin(engine, name, keep_a_chain_admin=False):
    """Delete an admin account (its open browsers are signed out on their next request).

    With keep_a_chain_admin (the admin pages), LastChainAdmin when no admin of the whole chain
    would be left. The delete and the count of those left are one write transaction, and
    storage.begin lets one writer in at a time (SQLite's write lock, PostgreSQL's advisory
    lock), so two admins removing each other at the same instant cannot both succeed: the
    second one counts after the first one's delete.
    """
    with storage.begin(engine) as conn:
        result = conn.execute(admin_user.delete().where(admin_user.c.name == name))
        if result.rowcount == 0:
            raise AccountError(f"there is no admin named {name!r}")
        if keep_a_chain_admin and not conn.execute(
                select(admin_user.c.id).where(admin_user.c.venue_id.is_(None)).limit(1)).first():
            raise LastChainAdmin("the last admin of the whole chain cannot be removed")


def list_admins(engine):
    """Every admin account (name, created_at, venue_id: None for the whole chain), by name."""
    with engine.connect() as conn:
        return conn.execute(select(admin_user.c.name, admin_user.c.created_at,
                                   admin_user.c.venue_id)
                            .order_by(admin_user.c.name)).all()


def authenticate(engine, name, password):
    """The admin row when name and password match, else None (equally slow either way)."""
    with engine.connect() as conn:
        row = conn.execute(select(admin_user).where(admin_user.c.name == name[:64])).first()
    if row is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return row if check_password_hash(row.password_hash, password) else None


@functools.cache
def _dummy_hash():
    """A hash checked when the name is unknown, so a wrong name costs as long as a wrong password."""
    return generate_password_hash("not anyone's password", method=HASH_METHOD)


def _fingerprint(password_hash):
    """A short digest of the password hash: a new password makes known browsers unknown."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _account_of(row):
    """What tells an admin account from a later one of the same name: its id (which SQLite may
    give again once the account with the highest id is deleted) and its creation time."""
    return [row.id, row.created_at.isoformat()]


def sign_in(row):
    """Start an admin session for row in this browser (a fresh session: no fixation)."""
    session.clear()
    session["admin"] = row.name
    session["admin_account"] = _account_of(row)
    session["admin_since"] = int(time.time())
    session["admin_epoch"] = row.session_epoch


def sign_out(engine, name):
    """End this browser's admin session and, when name is given, every other session of that admin."""
    session.clear()
    if name:
        with storage.begin(engine) as conn:
            conn.execute(admin_user.update().where(admin_user.c.name == name).values(
                session_epoch=admin_user.c.session_epoch + 1))


def signed_in_admin(engine):
    """The admin signed in on this request (name, venue_id: None for a chain admin), or None
    (expired, signed out elsewhere, password changed, account removed, or removed and another
    account created with the same name)."""
    name = session.get("admin")
    if not name:
        return None
    if time.time() - session.get("admin_since", 0) > SESSION_SECONDS:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(admin_user.c.id, admin_user.c.name, admin_user.c.venue_id,
                                  admin_user.c.created_at, admin_user.c.session_epoch)
                           .where(admin_user.c.name == name)).first()
    if row is None or session.get("admin_account") != _account_of(row) \
            or session.get("admin_epoch") != row.session_epoch:
        return None
    return row


# --- The per-account lock -----------------------------------------------------------------------

def lock_delay(failures):
    """How long an account with this many counted failures waits after the last one."""
    if failures < FREE_ATTEMPTS:
        return timedelta(0)
    doublings = min(failures - FREE_ATTEMPTS, 16)  # 2**16 minutes is far past LONGEST_LOCK
    return min(FIRST_LOCK * 2 ** doublings, LONGEST_LOCK)


def claim_attempt(engine, name):
    """Count a sign-in attempt on account `name` before its password is checked.

    Returns None when the attempt may go ahead (it counts as failed unless forget_failures
    follows), or the time from which the account takes attempts again. Counting first, in one
    write transaction, means guesses sent in parallel cannot all pass before the first failure
    is recorded. A name with no account has nothing to lock. Failures are forgotten
    FORGET_AFTER the last one.
    """
    with storage.begin(engine) as conn:
        now = utcnow()
        row = conn.execute(select(admin_user.c.failed_logins, admin_user.c.last_failed_at)
                           .where(admin_user.c.name == name)).first()
        if row is None:
            return None
        is_recent = row.last_failed_at is not None and now - row.last_failed_at < FORGET_AFTER
        failures = row.failed_logins if is_recent else 0
        if failures and now < row.last_failed_at + lock_delay(failures):
            return row.last_failed_at + lock_delay(failures)
        conn.execute(admin_user.update().where(admin_user.c.name == name).values(
            failed_logins=failures + 1, last_failed_at=now))
    return None


def forget_failures(engine, name):
    """A sign-in from a browser the account did not know succeeded: its failures stop counting."""
    with storage.begin(engine) as conn:
        conn.execute(admin_user.update().where(admin_user.c.name == name).values(
            failed_logins=0, last_failed_at=None))


def _device_signer():
    return URLSafeTimedSerializer(current_app.secret_key, salt="callpass-admin-device")


def _known_accounts():
    """[[name, fingerprint], …] from this browser's known-device cookie; [] when absent or not ours."""
    text = request.cookies.get(DEVICE_COOKIE)
    if not text:
        return []
    try:
        return _device_signer().loads(text, max_age=DEVICE_DAYS * 86400)
    except BadSignature:  # forged, or signed with another secret key, or too old
        return []


def is_known_device(engine, name):
    """Whether this browser signed in to account `name` before (since its password was set)."""
    with engine.connect() as conn:
        password_hash = conn.execute(select(admin_user.c.password_hash)
                                     .where(admin_user.c.name == name)).scalar()
    return password_hash is not None and [name, _fingerprint(password_hash)] in _known_accounts()


def remember_device(response, row):
    """Mark this browser as known to row's account: a signed cookie kept DEVICE_DAYS, which
    exempts it from the account's lock (not from the per-address limit)."""
    mine = [row.name, _fingerprint(row.password_hash)]
    others = [entry for entry in _known_accounts() if entry[0] != row.name]
    response.set_cookie(DEVICE_COOKIE, _device_signer().dumps([mine, *others][:DEVICE_ACCOUNTS]),
                        max_age=DEVICE_DAYS * 86400, path="/admin", httponly=True,
                        samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])


def is_allowed_address(address, networks):
    """Whether the socket address is inside one of the networks (admin.allow_from)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue  # check-config reports bad entries; a bad entry allows nobody
    return False


def remote_address():
    """The address of the requesting socket (never a forwarded header)."""
    return request.remote_addr or ""
