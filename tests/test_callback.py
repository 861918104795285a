"""The provider's notification: only a genuine, fresh, first notification opens the firewall."""

import json
import time
from datetime import timedelta

import pytest
from conftest import CALLBACK_TOKEN, close_window, notify, settle, signed_fields
from sqlalchemy import select

from portal import storage


def verification_row(app, token):
    v = storage.verification
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(v).where(v.c.token == token)).one()


def notifications(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.notification).order_by(storage.notification.c.id)).all()


def test_wrong_token_changes_nothing(guest, firewall, app):
    guest.start("+79161234567")
    response = notify(guest.client, "79161234567", token="wrong-token-0123456789")
    assert response.status_code == 403
    assert guest.status()["state"] == "pending"
    assert firewall.calls == []
    assert notifications(app)[-1].reason == "wrong handler token"


def test_wrong_checksum_changes_nothing(guest, firewall, app):
    guest.start("+79161234567")
    forged = signed_fields("79161234567", secret="guessed")
    response = guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=forged)
    assert response.status_code == 403
    unsigned = dict(forged)
    del unsigned["md5"]
    assert guest.client.get(f"/callback/smsc/{CALLBACK_TOKEN}", query_string=unsigned).status_code == 403
    assert guest.status()["state"] == "pending"
    assert firewall.calls == []
    assert [n.reason for n in notifications(app)] == ["missing or wrong md5 checksum"] * 2


def test_stale_ts_changes_nothing(guest, firewall, app):
    guest.start("+79161234567")
    response = notify(guest.client, "79161234567", ts=int(time.time()) - 3600)
    assert response.status_code == 403
    assert guest.status()["state"] == "pending"
    assert firewall.calls == []
    assert notifications(app)[-1].verdict == "rejected"
    assert "away from now" in notifications(app)[-1].reason


@pytest.mark.parametrize("ts", [10**30, -10**30, 2**40])
def test_an_absurd_ts_is_refused_like_a_stale_one(guest, firewall, app, ts):
    """Signed, but far beyond any column's range: 403 and a log row that keeps what was sent."""
    guest.start("+79161234567")
    response = notify(guest.client, "79161234567", ts=ts)
    assert response.status_code == 403
    assert guest.status()["state"] == "pending"
    assert firewall.calls == []
    row = notifications(app)[-1]
    assert row.verdict == "rejected" and "away from now" in row.reason
    assert str(ts) in row.fields


def test_replay_changes_nothing(guest, firewall, app, make_guest):
    guest.start("+79161234567")
    fields = signed_fields("79161234567")
    assert guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=fields).data == b"OK"
    settle(app)
    assert len(firewall.calls) == 1
    # The same guest starts again; a replay of the old notification must not confirm it.
    second = make_guest("10.77.0.12", "02:cc:00:00:00:12")
    second.start("+79161234567")
    assert guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=fields).data == b"OK"
    settle(app)
    assert second.status()["state"] == "pending"
    assert len(firewall.calls) == 1
    assert notifications(app)[-1].verdict == "replay"


def test_get_query_works_like_post(guest, firewall):
    guest.start("+79161234567")
    response = guest.client.get(f"/callback/smsc/{CALLBACK_TOKEN}",
                                query_string=signed_fields("79161234567"))
    assert response.data == b"OK"
    assert guest.status()["state"] == "confirmed"


def test_unknown_phone_is_recorded_as_unmatched(client, app, firewall):
    response = notify(client, "79990000000")
    assert response.status_code == 200 and response.data == b"OK"
    row = notifications(app)[-1]
    assert row.verdict == "unmatched" and row.phone == "+79990000000"
    assert json.loads(row.fields)["phone"] == "79990000000"
    assert firewall.calls == []


def test_garbage_fields_are_refused_cleanly(client, app):
    for fields in [{"phone": "abc", "ts": "1"}, {"phone": "79161234567", "ts": "soon"},
                   {"phone": "7" * 500, "ts": "x" * 5000}, {}]:
        fields = dict(fields, md5="0" * 32)
        response = client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=fields)
        assert response.status_code in (400, 403)
    assert all(n.verdict == "rejected" for n in notifications(app))


def test_a_call_after_the_window_confirms_nothing(guest, app, firewall):
    guest.start("+79161234567")
    close_window(app, guest.token)
    assert guest.call("79161234567").data == b"OK"
    assert guest.status()["state"] == "expired"
    assert firewall.calls == []
    assert notifications(app)[-1].verdict == "unmatched"


def test_a_call_in_the_window_notified_after_it_closed_still_opens_the_device(guest, app):
    """The provider's notification came late (a retry, the portal restarting): the call was
    made in time, so the guest who waited gets online."""
    guest.start("+79161234567")
    called = int(time.time())
    close_window(app, guest.token)
    assert guest.call("79161234567", ts=called - 150).data == b"OK"  # in the moved window
    assert guest.status()["access"] == "online"
    assert notifications(app)[-1].verdict == "accepted"


def test_a_late_notification_never_opens_a_device_that_asked_after_the_call(app, make_guest):
    """The owner called in the last moment of the window; the notification came after it closed
    and after a stranger asked for the number. The call is the owner's, never the stranger's."""
    owner = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    stranger = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    owner.start("+79161234567")
    close_window(app, owner.token)
    owner_window_end = verification_row(app, owner.token).expires_at
    assert stranger.start("+79161234567").status_code == 303
    call_ts = int(owner_window_end.timestamp()) - 5
    assert stranger.call("79161234567", ts=call_ts).data == b"OK"
    settle(app)
    assert stranger.status()["access"] != "online"
    assert owner.status()["access"] == "online"


def test_a_call_as_one_window_closes_and_another_opens_opens_nobody(app, make_guest):
    """Two devices' windows both contain the call, give or take the clocks' slack: either
    could be the caller's, so neither gets online on it."""
    first = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    second = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    first.start("+79161234567")
    v = storage.verification
    with storage.begin(app.extensions["callpass"].engine) as conn:  # closed 20 s ago
        row = conn.execute(select(v).where(v.c.token == first.token)).one()
        shift = row.expires_at - storage.utcnow() + timedelta(seconds=20)
        conn.execute(v.update().where(v.c.token == first.token).values(
            created_at=row.created_at - shift, expires_at=row.expires_at - shift))
    assert second.start("+79161234567").status_code == 303
    assert second.call("79161234567").data == b"OK"
    settle(app)
    assert second.status()["access"] != "online"
    assert first.status()["access"] != "online"
    assert notifications(app)[-1].verdict == "unmatched"
    assert second.call("79161234567", ts=int(time.time()) + 61).data == b"OK"  # a minute later
    settle(app)
    assert second.status()["access"] == "online"


def test_a_gateway_clock_off_by_minutes_still_lets_the_waiting_guest_in(guest, app, caplog):
    """No window contains the call (the provider's ts is three minutes before the number was
    shown, by the gateway's clock): the device waiting now gets it, and the log says why."""
    guest.start("+79161234567")
    assert guest.call("79161234567", ts=int(time.time()) - 180).data == b"OK"
    assert guest.status()["access"] == "online"
    assert "is the gateway's clock right" in caplog.text


def test_simulator_call_reaches_a_live_portal(live_portal, simulator):
    """The simulator's /sim/call notifies the portal over real HTTP and the guest gets online."""
    guest = live_portal.guest
    guest.start("+79161234567")
    answer = simulator_call(simulator, "79161234567")
    assert answer["status"] == 200
    assert guest.status()["state"] == "confirmed"


def simulator_call(simulator, digits):
    import requests

    with requests.Session() as s:
        return s.post(simulator.url + "/sim/call", data={"phone": digits}, timeout=10).json()


def test_one_phone_keeps_at_most_devices_per_phone_online(app, make_guest, firewall):
    from portal import sessions, settings

    settings.save(app.extensions["callpass"], {"portal.devices_per_phone": 2}, "test")
    devices = [make_guest(f"10.77.0.{30 + i}", f"02:cc:00:00:02:{i:02x}") for i in range(3)]
    for second, device in enumerate(devices):
        assert device.start("+79161234567").status_code == 303
        device.call("79161234567", ts=int(time.time()) + second)  # one call per device
    live = sessions.live_sessions(app.extensions["callpass"].engine)
    assert len(live) == 2
    revoked = [c[1] for c in firewall.calls if c[0] == "revoke"]
    assert len(revoked) == 1 and revoked[0] not in {row.mac for row in live}


def test_handler_url_carrying_the_secret_still_works_and_the_secret_is_not_stored(guest, app):
    """The admin page shows the handler URL as …?md5=<secret>; the provider may keep that query."""
    from conftest import CALLBACK_SECRET

    guest.start("+79161234567")
    url = f"/callback/smsc/{CALLBACK_TOKEN}?md5={CALLBACK_SECRET}"
    assert guest.client.post(url, data=signed_fields("79161234567")).data == b"OK"
    assert guest.status()["state"] == "confirmed"
    forged = guest.client.post(url, data=signed_fields("79161234567", secret="guess"))
    assert forged.status_code == 403
    assert all(CALLBACK_SECRET not in n.fields for n in notifications(app))


def test_forged_notifications_are_rate_limited_per_address(client, app):
    for _ in range(30):
        assert notify(client, "79161234567", token="wrong-token-0123456789").status_code == 403
    assert notify(client, "79161234567", token="wrong-token-0123456789").status_code == 429
    assert len(notifications(app)) == 30


def test_a_call_confirms_only_its_own_phone(app, firewall, make_guest):
    first = make_guest("10.77.0.11", "02:cc:00:00:00:11")
    second = make_guest("10.77.0.12", "02:cc:00:00:00:12")
    assert first.start("+79161234567").status_code == 303
    assert second.start("+79161234568").status_code == 303

    assert first.call("79161234567").data == b"OK"

    assert (first.status()["state"], first.status()["access"]) == ("confirmed", "online")
    assert (second.status()["state"], second.status()["access"]) == ("pending", None)
    assert set(firewall.list()) == {"02:cc:00:00:00:11"}


def test_only_call_events_open_the_firewall(guest, app, firewall):
    """A signed, fresh notification of another kind (no waitcall: a delivery status, an SMS)."""
    guest.start("+79161234567")
    fields = signed_fields("79161234567")
    del fields["waitcall"]
    answer = guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=fields)
    assert answer.status_code == 200 and answer.data == b"OK"
    settle(app)
    assert guest.status()["state"] == "pending"
    assert firewall.calls == [] and firewall.list() == {}
    assert (notifications(app)[-1].verdict, notifications(app)[-1].reason) == (
        "ignored", "not a call-confirmation event")
    # The same with waitcall=0.
    guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", data=dict(fields, waitcall="0"))
    settle(app)
    assert guest.status()["state"] == "pending" and firewall.list() == {}


def test_forgeries_from_the_providers_address_never_get_its_genuine_notifications_refused(
        guest, app, firewall):
    """A guest cannot spend the provider's allowance: the limit counts refusals only, and a
    genuine notification is authenticated before any limit is looked at."""
    for _ in range(40):
        notify(guest.client, "79161234567", token="wrong-token-0123456789")
    assert guest.start("+79161234567").status_code == 303
    assert guest.call("79161234567").data == b"OK"
    assert guest.status()["access"] == "online"
    assert ("allow", guest.mac) in [call[:2] for call in firewall.calls]


def test_forgeries_from_many_addresses_cannot_fill_the_log(app, make_guest):
    """A guest can take any number of addresses, not of MACs: its refusals are counted by MAC.
    Off the LAN, an IPv6 sender is counted by its /64; and all senders together have a cap."""
    guest = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    for i in range(5):  # one device, five addresses
        client = make_guest(f"10.77.1.{100 + i}", guest.mac).client
        for _ in range(40):
            notify(client, "79161234567", token="wrong-token-0123456789")
    assert len(notifications(app)) == 30

    for i in range(5):  # five addresses of one IPv6 network outside the LAN
        client = app.test_client()
        client.environ_base.update(REMOTE_ADDR=f"2001:db8::{i:x}")
        for _ in range(40):
            notify(client, "79161234567", token="wrong-token-0123456789")
    assert len(notifications(app)) == 60

    for i in range(300):  # many networks: at most 300 refusals a minute are kept in all
        client = app.test_client()
        client.environ_base.update(REMOTE_ADDR=f"2001:db8:{i:x}::1")
        notify(client, "79161234567", token="wrong-token-0123456789")
    assert len(notifications(app)) == 300
