"""Returning devices: a MAC that verified the same phone by a call within portal.remember_days is let
back in without a new call; everything else still calls."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import GUEST_MAC, notify, settle
from portal import sessions, settings
from portal.storage import access_session, utcnow, verification

PHONE, DIGITS = "+79161234567", "79161234567"


@pytest.fixture
def remember(app):
    """Set portal.remember_days as the admin would."""
    svc = app.extensions["callpass"]
    return lambda days: settings.save(svc, {"portal.remember_days": days}, "test")


def verify_by_call(guest, seconds_ago=0):
    assert guest.start(PHONE).status_code == 303
    # Distinct ts: the same (phone, ts) twice is a replay.
    assert notify(guest.client, DIGITS, ts=int(time.time()) - seconds_ago).data == b"OK"
    assert guest.status()["state"] == "confirmed"


def end_all_sessions(app, firewall):
    engine = app.extensions["callpass"].engine
    for row in sessions.live_sessions(engine):
        sessions.end_session(engine, row.id, "expired")
    settle(app)


def rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(verification).order_by(verification.c.id)).all()


def test_a_remembered_device_gets_online_without_calling(guest, app, firewall, simulator, remember):
    remember(7)
    verify_by_call(guest)
    end_all_sessions(app, firewall)
    firewall.calls.clear()
    simulator.state.set_knobs(error_code=2)  # any question to the provider would now fail

    back = guest.start(PHONE)
    assert back.status_code == 303
    page = guest.client.get(back.headers["Location"]).get_data(as_text=True)
    assert "You are online" in page and "no call was needed" in page
    assert ("allow", GUEST_MAC, 240 * 60) in firewall.calls
    latest = rows(app)[-1]
    assert (latest.state, latest.call_number, latest.mac, latest.phone) == (
        "confirmed", "", GUEST_MAC, PHONE)
    assert sessions.active_session(app.extensions["callpass"].engine, GUEST_MAC).verification_id \
        == latest.id


def test_off_by_default(guest, app, firewall):
    verify_by_call(guest)
    end_all_sessions(app, firewall)
    assert guest.start(PHONE).status_code == 303
    assert guest.status()["state"] == "pending"


@pytest.mark.parametrize("case", ["other phone", "other device", "too long ago"])
def test_everything_else_still_calls(guest, make_guest, app, firewall, remember, case):
    remember(7)
    verify_by_call(guest)
    end_all_sessions(app, firewall)
    who, phone = guest, PHONE
    if case == "other phone":
        phone = "+79161234500"
    elif case == "other device":
        who = make_guest("10.77.0.12", "02:cc:00:00:00:12")
    else:
        with app.extensions["callpass"].engine.begin() as conn:
            conn.execute(update(verification).values(confirmed_at=utcnow() - timedelta(days=8)))
    assert who.start(phone).status_code == 303
    assert who.status()["state"] == "pending"


def test_only_a_real_call_starts_the_window(guest, app, firewall, remember):
    remember(7)
    verify_by_call(guest)
    end_all_sessions(app, firewall)
    assert guest.start(PHONE).status_code == 303  # remembered: a row without a call
    end_all_sessions(app, firewall)
    engine = app.extensions["callpass"].engine
    with engine.begin() as conn:
        conn.execute(update(verification).where(verification.c.call_number != "")
                     .values(confirmed_at=utcnow() - timedelta(days=8)))
    assert guest.start(PHONE).status_code == 303
    assert guest.status()["state"] == "pending"


def test_remembered_devices_count_towards_the_device_limit(make_guest, app, firewall, remember):
    remember(7)
    app.extensions["callpass"].config["portal"]["limit_per_phone"] = "10 per minute"
    phones = [make_guest(f"10.77.0.{30 + i}", f"02:cc:00:00:02:{i:02x}") for i in range(4)]
    for i, device in enumerate(phones):
        verify_by_call(device, seconds_ago=10 - i)
    engine = app.extensions["callpass"].engine
    with engine.connect() as conn:
        open_macs = {r.mac for r in conn.execute(select(access_session).where(
            access_session.c.ended_at.is_(None))).all()}
    assert phones[0].mac not in open_macs  # devices_per_phone = 3
    assert phones[0].start(PHONE).status_code == 303  # back without a call
    assert sessions.active_session(engine, phones[0].mac) is not None
    assert sessions.active_session(engine, phones[1].mac) is None


def test_a_remembered_device_posting_again_and_again_adds_nothing_and_is_counted(guest, app,
                                                                                 remember):
    """Online already under that phone: the form brings back its page, with no new rows in the
    identification log or the firewall's queue; and such sign-ins count against the limits
    (limit_per_phone: 3 in 10 minutes, the call the first), so no device can post its way into
    thousands of sessions."""
    remember(7)
    verify_by_call(guest)
    before = len(rows(app))
    codes = [guest.client.post("/", data={"phone": PHONE}).status_code for _ in range(8)]
    assert codes == [303, 303] + [429] * 6
    assert len(rows(app)) == before
    with app.extensions["callpass"].engine.connect() as conn:
        assert len(conn.execute(select(access_session)).all()) == 1
