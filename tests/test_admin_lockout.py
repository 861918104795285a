"""Admin sign-in that holds: guesses from many addresses lock the account (longer each time) for
browsers it does not know, never for the real admin's own browser; signing out or a new password
ends every session, a copied cookie included."""

import re
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from admin_support import (ADMIN_NAME, ADMIN_PASSWORD, audit_rows, command_config, csrf_token,
                           sign_in)
from portal import admin as admin_module
from portal import auth, storage
from portal.cli import main

ACCOUNT_LOCKED = ("Too many failed sign-ins to this account. Try again after {time} (in {minutes} "
                  "min). A browser that has signed in to this account before can sign in now.")


class Clock:
    """storage.utcnow as auth and the admin pages see it, moved forward by the test."""

    def __init__(self, monkeypatch):
        self.offset = timedelta(0)
        for module in (auth, admin_module):
            monkeypatch.setattr(module, "utcnow", self.now)

    def now(self):
        return storage.utcnow() + self.offset

    def advance(self, **kw):
        self.offset += timedelta(**kw)


@pytest.fixture
def cfg(cfg):
    """The venue's time zone UTC, so that the times on the lock-out page read as UTC here."""
    cfg["venue"]["timezone"] = "UTC"
    return cfg


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture
def account(app):
    auth.add_admin(app.extensions["callpass"].engine, ADMIN_NAME, ADMIN_PASSWORD)


def browser(app, address):
    """A fresh browser (no cookies) on a source address inside admin.allow_from."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def addresses():
    """127.0.1.1, 127.0.1.2, …: all inside the default allow_from (127.0.0.0/8)."""
    n = 0
    while True:
        n += 1
        yield f"127.0.{n // 250 + 1}.{n % 250 + 1}"


def guess(app, address, password="wrong guess 123"):
    return sign_in(browser(app, address), ADMIN_NAME, password)


def is_signed_in(client):
    return client.get("/admin/").status_code == 200


def known_browser(app):
    """The real admin's browser: it signed in once, then out."""
    client = browser(app, "127.0.0.1")
    assert sign_in(client).status_code == 303
    client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert not is_signed_in(client)
    return client


def test_guesses_from_many_addresses_lock_the_account_but_not_the_admins_browser(
        app, account, clock):
    real = known_browser(app)
    source = addresses()
    # The reproduction: 47 guesses from 9 addresses (127.0.0.2-.10), each under its own limit.
    answers = [guess(app, f"127.0.0.{2 + n % 9}") for n in range(47)]
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 42
    locked = answers[5]
    assert 55 <= int(locked.headers["Retry-After"]) <= 60
    page = locked.get_data(as_text=True)
    shown = re.search(re.escape(ACCOUNT_LOCKED).replace(r"\{time\}", "(.+?) UTC")
                      .replace(r"\{minutes\}", "1"), page)
    assert shown, page
    retry = datetime.strptime(shown[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert 0 < (retry - clock.now()).total_seconds() <= 60

    # The right password from a browser the account does not know is held too …
    stranger = browser(app, next(source))
    assert sign_in(stranger).status_code == 429 and not is_signed_in(stranger)
    # … but the real admin's own browser gets in at once.
    assert sign_in(real).status_code == 303 and is_signed_in(real)
    actions = [r.action for r in audit_rows(app)]
    assert actions.count("login-failed") == 5 and actions.count("login-locked") == 43

    # The wait grows: each failure after the lock doubles it (1, 2, 4 … minutes, at most 1 h).
    waits = []
    for _ in range(4):
        clock.advance(seconds=int(waits[-1] if waits else 60) + 1)
        assert guess(app, next(source)).status_code == 401
        refused = guess(app, next(source))
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
    assert [round(wait / 60) for wait in waits] == [2, 4, 8, 16]
    assert sign_in(browser(app, "127.0.0.1")).status_code == 429  # a new browser on any address

    # When the wait is over, the right password from a new browser works and resets the count.
    clock.advance(seconds=waits[-1] + 1)
    newcomer = browser(app, next(source))
    assert sign_in(newcomer).status_code == 303 and is_signed_in(newcomer)
    assert guess(app, next(source)).status_code == 401


def test_the_known_browser_stays_under_the_address_limit_and_does_not_lock_the_account(
        app, account):
    real = known_browser(app)
    codes = [sign_in(real, ADMIN_NAME, f"typo {n}").status_code for n in range(6)]
    assert codes == [401] * 5 + [429]
    assert "Too many failed sign-ins from your address." in \
        sign_in(real).get_data(as_text=True)
    # Its typos did not count against the account: a new browser elsewhere signs in.
    assert sign_in(browser(app, "127.0.0.2")).status_code == 303


def test_a_forged_or_foreign_device_cookie_does_not_pass_the_lock(app, account):
    source = addresses()
    for _ in range(5):
        guess(app, next(source))
    forged = browser(app, next(source))
    forged.set_cookie(auth.DEVICE_COOKIE, "W1siYm9zcyIsICIwMDAwIl1d.forged.signature",
                      path="/admin")
    assert sign_in(forged).status_code == 429

    # A browser known to another admin is not known to this one.
    auth.add_admin(app.extensions["callpass"].engine, "anna", "a long enough secret")
    annas = browser(app, next(source))
    assert sign_in(annas, "anna", "a long enough secret").status_code == 303
    annas.post("/admin/logout", data={"csrf_token": csrf_token(annas, "/admin/")})
    assert sign_in(annas).status_code == 429


def test_a_new_password_lifts_the_lock(app, account, tmp_path):
    source = addresses()
    for _ in range(6):
        guess(app, next(source))
    assert guess(app, next(source), ADMIN_PASSWORD).status_code == 429
    result = CliRunner().invoke(main, ["admin", "passwd", ADMIN_NAME, "--config",
                                       command_config(tmp_path, app)], input="a brand new secret\n")
    assert result.exit_code == 0, result.output
    assert "sign-in lock, if any, is lifted" in result.output
    assert guess(app, next(source), "a brand new secret").status_code == 303


def copy_of(app, client):
    """Another browser carrying a copy of client's session cookie (as a thief would)."""
    thief = browser(app, "127.0.0.66")
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def test_signing_out_ends_a_copied_session(app, account):
    real = browser(app, "127.0.0.1")
    assert sign_in(real).status_code == 303
    thief = copy_of(app, real)
    assert is_signed_in(thief)

    out = real.post("/admin/logout", data={"csrf_token": csrf_token(real, "/admin/")})
    assert out.status_code == 303
    assert not is_signed_in(thief) and not is_signed_in(real)
    page = real.get("/admin/login").get_data(as_text=True)
    assert "You are signed out, here and on every other browser signed in as you." in page
    # Signing in again does not bring the copy back.
    assert sign_in(real).status_code == 303
    assert not is_signed_in(thief)


def test_a_new_password_ends_a_copied_session(app, account, tmp_path):
    real = browser(app, "127.0.0.1")
    sign_in(real)
    thief = copy_of(app, real)
    result = CliRunner().invoke(main, ["admin", "passwd", ADMIN_NAME, "--config",
                                       command_config(tmp_path, app)], input="a brand new secret\n")
    assert result.exit_code == 0, result.output
    assert not is_signed_in(thief) and not is_signed_in(real)
    with app.extensions["callpass"].engine.connect() as conn:
        assert conn.execute(select(storage.admin_user.c.session_epoch)).scalar() == 1
