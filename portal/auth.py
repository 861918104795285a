"""Venue admin accounts: slow password hashes, the signed-in admin of a request, and who may sign in.

Passwords are stored only as werkzeug scrypt hashes. The login session lives in Flask's signed
cookie: the admin's name, when they signed in, and a fingerprint of the password hash, so that
changing a password (or removing the account) signs out every browser using the old one.
"""

import functools
import hashlib
import ipaddress
import re
import time

from flask import request, session
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from . import storage
from .storage import admin_user, utcnow

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200
SESSION_SECONDS = 12 * 3600  # a signed-in browser must sign in again after this
HASH_METHOD = "scrypt"  # werkzeug's scrypt:32768:8:1, about 0.1 s per check
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


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


def add_admin(engine, name, password):
    """Create an admin account; AccountError when the name is taken or the password too weak."""
    check_name(name)
    check_password(name, password)
    password_hash = generate_password_hash(password, method=HASH_METHOD)  # slow: before the lock
    with storage.begin(engine) as conn:
        if conn.execute(select(admin_user.c.id).where(admin_user.c.name == name)).first():
            raise AccountError(f"an admin named {name!r} already exists")
        conn.execute(admin_user.insert().values(
            name=name, password_hash=password_hash, created_at=utcnow()))


def set_password(engine, name, password):
    """Replace an admin's password (which signs out their open browsers)."""
    check_password(name, password)
    password_hash = generate_password_hash(password, method=HASH_METHOD)  # slow: before the lock
    with storage.begin(engine) as conn:
        result = conn.execute(admin_user.update().where(admin_user.c.name == name).values(
            password_hash=password_hash))
    if result.rowcount == 0:
        raise AccountError(f"there is no admin named {name!r}")


def remove_admin(engine, name):
    """Delete an admin account (its open browsers are signed out on their next request)."""
    with storage.begin(engine) as conn:
        result = conn.execute(admin_user.delete().where(admin_user.c.name == name))
    if result.rowcount == 0:
        raise AccountError(f"there is no admin named {name!r}")


def list_admins(engine):
    """Every admin account (name, created_at), by name."""
    with engine.connect() as conn:
        return conn.execute(select(admin_user.c.name, admin_user.c.created_at)
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
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def sign_in(row):
    """Start an admin session for row in this browser (a fresh session: no fixation)."""
    session.clear()
    session["admin"] = row.name
    session["admin_since"] = int(time.time())
    session["admin_key"] = _fingerprint(row.password_hash)


def sign_out():
    """End this browser's admin session."""
    session.clear()


def signed_in_admin(engine):
    """The name of the admin signed in on this request, or None (expired, removed, password changed)."""
    name = session.get("admin")
    if not name:
        return None
    if time.time() - session.get("admin_since", 0) > SESSION_SECONDS:
        return None
    with engine.connect() as conn:
        password_hash = conn.execute(select(admin_user.c.password_hash)
                                     .where(admin_user.c.name == name)).scalar()
    if password_hash is None or session.get("admin_key") != _fingerprint(password_hash):
        return None
    return name


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
