"""Blocked phones and devices: an admin blocks one with a reason (in the audit log), its sessions
end, and its guest gets a neutral message while nothing reaches the provider or the firewall."""

import threading
import time

from sqlalchemy import select

from admin_support import admin, audit_rows  # noqa: F401
from conftest import GUEST_MAC, settle
from portal import audit, blocklist, sessions, storage

OTHER_MAC = "02:00:00:00:aa:02"


def sessions_of(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.access_session)).all()


def verifications_of(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.verification)).all()


def blocked_rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.blocked)).all()


def online(make_guest, ip, mac, phone):
    guest = make_guest(ip, mac)
    assert guest.start(phone).status_code == 303
    assert guest.call(phone.lstrip("+")).data == b"OK"
    return guest


def asked_provider(app, monkeypatch):
    """The phones the provider is asked to wait for a call from, from now on."""
    provider = app.extensions["callpass"].provider
    asked, real = [], provider.wait_call
    monkeypatch.setattr(provider, "wait_call", lambda phone: asked.append(phone) or real(phone))
    return asked


def test_a_blocked_phone_is_cut_off_and_turned_away(app, admin, make_guest, firewall, monkeypatch):
    guest = online(make_guest, "10.77.0.11", GUEST_MAC, "+79161234567")
    asked = asked_provider(app, monkeypatch)
    sessions_page = admin.get("/admin/sessions").get_data(as_text=True)
    assert 'href="/admin/blocked?target=%2B79161234567">Block…' in sessions_page

    blocked = admin.post("/admin/blocked", {"target": "8 916 123-45-67",
                                            "reason": "Shared the password"})
    assert blocked.status_code == 303
    settle(app)
    assert firewall.calls[-1] == ("revoke", GUEST_MAC)
    [session] = sessions_of(app)
    assert session.end_reason == "blocked"
    page = admin.get("/admin/blocked").get_data(as_text=True)
    assert "+79161234567" in page and "Shared the password" in page
    [entry] = [r for r in audit_rows(app) if r.action == "block"]
    assert audit.data_of(entry) == {"kind": "phone", "value": "+79161234567",
                                    "reason": "Shared the password"}
    assert "blocked a phone or device" in admin.get("/admin/audit").get_data(as_text=True)

    calls_before, rows_before = list(firewall.calls), len(verifications_of(app))
    refused = guest.start("+7 916 123-45-67")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403
    assert "Sign-in is not available for this device or number here." in text
    assert "blocked" not in text.lower() and 'value="+7 916 123-45-67"' in text
    # Another device, the same phone: also turned away.
    assert make_guest("10.77.0.12", OTHER_MAC).start("+79161234567").status_code == 403
    assert asked == [] and firewall.calls == calls_before
    assert len(verifications_of(app)) == rows_before

    [row] = blocked_rows(app)
    unblocked = admin.post(f"/admin/blocked/{row.id}/remove", page="/admin/blocked")
    assert unblocked.status_code == 303
    assert [audit.data_of(r)["value"] for r in audit_rows(app) if r.action == "unblock"] == [
        "+79161234567"]
    assert guest.start("+79161234567").status_code == 303
    assert asked == ["+79161234567"]


def test_a_blocked_device_is_turned_away_whatever_the_phone(app, admin, make_guest, monkeypatch):
    guest = make_guest("10.77.0.13", OTHER_MAC)
    assert guest.start("+79160000001").status_code == 303  # waiting for its call
    asked = asked_provider(app, monkeypatch)
    assert admin.post("/admin/blocked", {"target": OTHER_MAC.upper().replace(":", "-"),
                                         "reason": "abuse"}).status_code == 303
    assert [v.state for v in verifications_of(app)] == ["failed"]  # its call opens nothing now
    assert guest.call("79160000001").status_code == 200
    assert sessions_of(app) == []
    assert guest.start("+79160000002").status_code == 403
    assert asked == []
    assert OTHER_MAC in admin.get("/admin/blocked").get_data(as_text=True)


def test_blocking_needs_a_target_and_a_reason(app, admin):
    page = admin.post("/admin/blocked", {"target": "not a phone", "reason": " "})
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert 'id="target-error" role="alert">Enter a phone number' in html
    assert 'id="reason-error" role="alert">Say why: the audit log keeps it.' in html
    assert 'value="not a phone"' in html
    assert admin.post("/admin/blocked", {"target": "+79161234567", "reason": "x"}).status_code == 303
    again = admin.post("/admin/blocked", {"target": "+7 916 123 45 67", "reason": "y"})
    assert again.status_code == 400
    assert "+79161234567 is blocked already." in again.get_data(as_text=True)
    assert len(blocked_rows(app)) == 1
    assert admin.post("/admin/blocked/999/remove", page="/admin/blocked").status_code == 404


def test_a_call_for_a_phone_blocked_while_it_waited_opens_nothing(app, guest, firewall):
    """The block landed while the provider was answering (so block() could not fail the
    verification, which was written after it): the call itself is refused."""
    assert guest.start("+79161234567").status_code == 303
    with storage.begin(app.extensions["callpass"].engine) as conn:
        conn.execute(storage.blocked.insert().values(
            kind="phone", value="+79161234567", reason="test", created_at=storage.utcnow(),
            created_by="boss"))
    assert guest.call("79161234567").data == b"OK"
    assert guest.status()["access"] is None
    assert firewall.calls == []


def test_a_block_queued_behind_a_call_ends_its_session_after_it_started(app):
    """A block that waits for the write lock while a call opens a session for that phone ends
    the session at its own time, never before the session started (the identification log
    must never show an end before a start)."""
    engine = app.extensions["callpass"].engine
    with storage.begin(engine) as conn:  # the call's transaction holds the write lock
        blocker = threading.Thread(target=blocklist.block, args=(
            engine, blocklist.PHONE, "+79161234567", "fraud", "admin"))
        blocker.start()
        time.sleep(0.3)  # the block has been asked for, and waits
        sessions.grant_access(conn, GUEST_MAC, "10.77.0.11", "+79161234567", 60)
    blocker.join(10)
    [session] = sessions_of(app)
    assert session.end_reason == "blocked"
    assert session.started_at <= session.ended_at
