"""One call, one session: the notification, the confirmation and the session are written together,
and a repeated (phone, ts) is recognised by the database, however many arrive at the same instant."""

import threading

import pytest
import requests
from conftest import CALLBACK_TOKEN, signed_fields, wait_until
from sqlalchemy import select

from portal import storage


def rows(app, table):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(table).order_by(table.c.id)).all()


def send_together(url, fields, k):
    """POST the same notification k times at the same instant; returns the HTTP statuses."""
    barrier = threading.Barrier(k)
    statuses = [None] * k

    def send(i):
        with requests.Session() as http:
            barrier.wait()
            statuses[i] = http.post(url, data=fields, timeout=30).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(k)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


@pytest.mark.parametrize("k", [2, 5, 10])
def test_identical_notifications_at_once_give_one_session(live_portal, app, firewall, k):
    guest = live_portal.guest
    assert guest.start("+79161234567").status_code == 303
    fields = signed_fields("79161234567")

    statuses = send_together(f"{live_portal.url}/callback/smsc/{CALLBACK_TOKEN}", fields, k)

    assert statuses == [200] * k
    [session] = rows(app, storage.access_session)
    assert session.started_at <= session.ends_at and session.ended_at is None
    notes = rows(app, storage.notification)
    assert sorted(n.verdict for n in notes) == ["accepted"] + ["replay"] * (k - 1)
    [confirmed] = rows(app, storage.verification)
    assert confirmed.state == "confirmed" and session.verification_id == confirmed.id
    # The live portal's firewall worker applies it: one MAC, the whole session.
    assert wait_until(lambda: guest.mac in firewall.list())
    assert {c for c in firewall.calls if c[0] == "allow"} == {("allow", guest.mac, 240 * 60)}


def test_a_call_nobody_waits_for_is_recorded_once(live_portal, app):
    fields = signed_fields("79990000000")
    statuses = send_together(f"{live_portal.url}/callback/smsc/{CALLBACK_TOKEN}", fields, 5)
    assert statuses == [200] * 5
    assert sorted(n.verdict for n in rows(app, storage.notification)) == \
        ["replay"] * 4 + ["unmatched"]


def test_a_verification_is_confirmed_with_its_session_or_not_at_all(guest, app, monkeypatch):
    """A failure while the session is written leaves the guest waiting and nothing recorded."""
    from portal import sessions

    assert guest.start("+79161234567").status_code == 303

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sessions, "grant_access", broken)
    failed = guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}",
                               data=signed_fields("79161234567"))
    assert failed.status_code == 500  # the provider delivers it again later
    assert guest.status()["state"] == "pending"
    assert rows(app, storage.access_session) == []
    assert rows(app, storage.notification) == []  # so the provider's retry is not a "replay"
    monkeypatch.undo()
    assert guest.call("79161234567").status_code == 200
    assert guest.status() | {"expires_in": 0} == {
        "state": "confirmed", "access": "online", "call_number": guest.status()["call_number"],
        "expires_in": 0}
