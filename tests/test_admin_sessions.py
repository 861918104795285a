"""Sessions page: find a guest by phone or MAC, end or extend their session; and the dashboard."""

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from admin_support import admin, audit_rows  # noqa: F401
from conftest import GUEST_MAC, close_window, open_session, settle
from portal import admin as admin_views
from portal import audit, idlog, sessions, storage, verification
from portal.firewall import FirewallError, NoopFirewall
from portal.provider import ProviderRejected


def online_guest(make_guest, ip, mac, phone):
    guest = make_guest(ip, mac)
    assert guest.start(phone).status_code == 303
    assert guest.call(phone.lstrip("+")).data == b"OK"
    return guest


def session_rows(app):
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(storage.access_session).order_by(storage.access_session.c.id)).all()


def test_ending_a_session_cuts_the_device_off(app, admin, make_guest, firewall):
    guest = online_guest(make_guest, "10.77.0.11", GUEST_MAC, "+79161234567")
    assert b"You are online" in guest.client.get("/").data
    [session] = session_rows(app)

    page = admin.get("/admin/sessions").get_data(as_text=True)
    assert GUEST_MAC in page and "+79161234567" in page
    # "End now" asks first, on a page of its own (no script needed); asking changes nothing.
    asked = admin.get(f"/admin/sessions/{session.id}/end?q=916").get_data(as_text=True)
    assert "End this session?" in asked and GUEST_MAC in asked and "+79161234567" in asked
    assert 'name="q" value="916"' in asked and 'href="/admin/sessions?q=916">Cancel' in asked
    assert session_rows(app)[0].ended_at is None
    assert b"You are online" in guest.client.get("/").data
    ended = admin.post(f"/admin/sessions/{session.id}/end",
                       page=f"/admin/sessions/{session.id}/end")
    assert ended.status_code == 303

    settle(app)
    assert firewall.calls[-1] == ("revoke", GUEST_MAC)
    assert b"You are online" not in guest.client.get("/").data  # back to the phone form
    # The wait page, still open or reloaded, says the session is over, never "online".
    wait = guest.client.get(f"/wait/{guest.token}").get_data(as_text=True)
    assert "Your time online has ended" in wait and "You are online" not in wait
    assert "Get a new number" in wait
    assert guest.status()["access"] == "ended"
    [session] = session_rows(app)
    assert session.end_reason == "admin" and session.ended_at is not None
    history = admin.get("/admin/sessions").get_data(as_text=True)
    assert "ended by an admin" in history and "Nobody is online." in history
    [entry] = [r for r in audit_rows(app) if r.action == "session-end"]
    assert audit.data_of(entry) == {"session": session.id, "mac": GUEST_MAC,
                                    "phone": "+79161234567"}

    again = admin.post(f"/admin/sessions/{session.id}/end", page="/admin/sessions")
    assert again.status_code == 404
    assert admin.get(f"/admin/sessions/{session.id}/end").status_code == 404


def test_extending_a_session_moves_its_end_and_tells_the_firewall(app, admin, make_guest, firewall):
    online_guest(make_guest, "10.77.0.11", GUEST_MAC, "+79161234567")
    [before] = session_rows(app)
    extended = admin.post(f"/admin/sessions/{before.id}/extend", {"minutes": "60"},
                          page="/admin/sessions")
    assert extended.status_code == 303
    [after] = session_rows(app)
    assert after.ends_at - before.ends_at == timedelta(minutes=60)
    settle(app)
    verb, mac, seconds = firewall.calls[-1]
    assert (verb, mac) == ("allow", GUEST_MAC) and 299 * 60 <= seconds <= 300 * 60
    assert [audit.data_of(r) for r in audit_rows(app) if r.action == "session-extend"] == [
        {"session": before.id, "mac": GUEST_MAC, "minutes": 60}]

    too_long = admin.post(f"/admin/sessions/{before.id}/extend", {"minutes": "44640"},
                          page="/admin/sessions")
    assert too_long.status_code == 303
    assert "at most 31 days" in admin.get("/admin/sessions").get_data(as_text=True)
    assert session_rows(app)[0].ends_at == after.ends_at


@pytest.mark.parametrize("action, form", [("end", {}), ("extend", {"minutes": "60"})])
def test_a_session_that_ends_between_the_check_and_the_change_is_left_as_it_ended(
        app, admin, make_guest, monkeypatch, action, form):
    """The device signs in anew (its old session "replaced") after the admin page found the old
    one open, but before "End now" or "Extend" writes: the page says so, the legal log keeps
    "replaced" at its time, and no audit entry claims a change."""
    engine = app.extensions["callpass"].engine
    old = open_session(app, GUEST_MAC, "10.77.0.11", "+79161234567", 60)
    checked = admin_views.open_session

    def check_then_sign_in_anew(session_id):
        row = checked(session_id)
        with storage.begin(engine) as conn:
            sessions.grant_access(conn, GUEST_MAC, "10.77.0.11", "+79161234567", 60)
        return row
    monkeypatch.setattr(admin_views, "open_session", check_then_sign_in_anew)

    answer = admin.post(f"/admin/sessions/{old}/{action}", form, page="/admin/sessions")
    assert answer.status_code == 303
    page = admin.get("/admin/sessions").get_data(as_text=True)
    assert f"The session of {GUEST_MAC} (+79161234567) had already ended; nothing was changed." \
        in page
    replaced, new = session_rows(app)
    assert replaced.id == old and replaced.end_reason == "replaced"
    assert replaced.ended_at <= new.started_at and replaced.ends_at > new.started_at
    assert new.ended_at is None and new.ends_at - new.started_at == timedelta(minutes=60)
    assert [r for r in audit_rows(app) if r.action in ("session-end", "session-extend")] == []


def test_search_by_phone_or_mac(admin, make_guest):
    online_guest(make_guest, "10.77.0.11", "02:cc:00:00:00:11", "+79161234567")
    online_guest(make_guest, "10.77.0.12", "02:cc:00:00:00:22", "+380501234567")

    def shown(query):
        page = admin.get("/admin/sessions", query_string={"q": query}).get_data(as_text=True)
        return [mac for mac in ("02:cc:00:00:00:11", "02:cc:00:00:00:22") if mac in page]

    assert shown("") == ["02:cc:00:00:00:11", "02:cc:00:00:00:22"]
    assert shown("8 916 123-45-67") == ["02:cc:00:00:00:11"]  # as a guest would type it
    assert shown("916 123 45 67") == ["02:cc:00:00:00:11"]
    assert shown("+380") == ["02:cc:00:00:00:22"]
    assert shown("02-CC-00-00-00-22") == ["02:cc:00:00:00:22"]
    assert shown("00:11") == ["02:cc:00:00:00:11"]
    assert shown("nobody") == []


def test_dashboard_shows_what_an_owner_needs_at_a_glance(app, admin, make_guest, simulator):
    online_guest(make_guest, "10.77.0.11", GUEST_MAC, "+79161234567")
    make_guest("10.77.0.12", "02:cc:00:00:00:12").start("+79161234500")  # waiting for a call
    simulator.state.set_knobs(error_code=2)
    assert make_guest("10.77.0.13", "02:cc:00:00:00:13").start("+79161234501").status_code == 503
    simulator.state.reset()

    svc = app.extensions["callpass"]
    asked = []
    real_balance = svc.provider.balance
    svc.provider.balance = lambda: asked.append(1) or real_balance()

    page = admin.get("/admin/").get_data(as_text=True)
    assert '<span class="figure">1</span><span class="label">online now' in page
    assert '<span class="figure">1</span><span class="label">waiting for a call' in page
    assert '<span class="figure">1</span><span class="label">today: confirmed' in page
    assert '<span class="figure">1</span><span class="label">today: failed' in page
    assert "Balance: 250.80 RUB" in page
    assert ("wrong login or password, or this server&#39;s IP is not on the account&#39;s "
            "allow-list") in page
    assert ('>http://localhost/callback/smsc/test-callback-token-0123456789'
            '?md5=test-checksum-secret</textarea>') in page
    assert "Answers (backend: noop)." in page
    assert "accepted" in page  # the last notification
    admin.get("/admin/")
    assert len(asked) == 1  # the balance is asked at most once a minute


def test_dashboard_says_when_the_firewall_or_provider_does_not_answer(cfg, neighbour_table):
    from admin_support import ADMIN_PASSWORD, sign_in

    from portal import auth, create_app

    class DeadFirewall(NoopFirewall):
        def list(self):
            raise FirewallError("callpass-fw list: table inet callpass does not exist")

    class FailingProvider:
        def balance(self):
            raise ProviderRejected(4, "IP blocked")

    app = create_app(cfg, firewall=DeadFirewall(), provider=FailingProvider())
    storage.upgrade(app.extensions["callpass"].engine)
    auth.add_admin(app.extensions["callpass"].engine, "boss", ADMIN_PASSWORD)
    assert not app.extensions["callpass"].firewall_worker.attempt()
    client = app.test_client()
    sign_in(client)
    page = client.get("/admin/").get_data(as_text=True)
    assert "Does not answer (backend: noop). Guests cannot get online." in page
    assert "table inet callpass does not exist" in page
    assert "has blocked this server" in page and "provider error 4: IP blocked" in page
    app.extensions["callpass"].engine.dispose()


def test_time_that_ran_out_reads_as_ended_before_the_maintenance_thread_writes_it(
        app, admin, make_guest):
    """Time-derived state is written by the maintenance thread alone: until its next round, every
    admin view reads a session whose time ran out as ended "expired" at its end, and a pending
    verification past its window as expired; no view, sign-in or admin action writes them."""
    engine = app.extensions["callpass"].engine
    late = open_session(app, GUEST_MAC, "10.77.0.11", "+79161234567", 60)
    open_session(app, "02:cc:00:00:00:22", "10.77.0.12", "+79161234500", 60)
    sessions.end_session(engine, open_session(app, "02:cc:00:00:00:33", "10.77.0.14",
                                              "+79161234502", 60), "admin")
    row = session_rows(app)[0]
    ends_at = row.ends_at - timedelta(minutes=65)  # its hour was over five minutes ago
    with storage.begin(engine) as conn:
        conn.execute(storage.access_session.update().where(storage.access_session.c.id == late)
                     .values(started_at=row.started_at - timedelta(minutes=65), ends_at=ends_at))
    waiting = make_guest("10.77.0.13", "02:cc:00:00:00:13")
    assert waiting.start("+79161234501").status_code == 303
    close_window(app, waiting.token)

    dashboard = admin.get("/admin/").get_data(as_text=True)
    assert '<span class="figure">1</span><span class="label">online now' in dashboard
    assert '<span class="figure">0</span><span class="label">waiting for a call' in dashboard
    assert '<span class="figure">1</span><span class="label">today: expired' in dashboard
    page = admin.get("/admin/sessions").get_data(as_text=True)
    live, ended = page.split("<h2>Ended</h2>", 1)
    assert GUEST_MAC not in live and GUEST_MAC in ended and "time ran out" in ended
    assert ended.index("02:cc:00:00:00:33") < ended.index(GUEST_MAC)  # newest end first
    assert admin.get(f"/admin/sessions/{late}/end").status_code == 404
    assert admin.post(f"/admin/sessions/{late}/extend", {"minutes": "60"},
                      page="/admin/sessions").status_code == 404
    log_page = admin.get("/admin/log").get_data(as_text=True)
    assert "time ran out" in log_page
    export = list(csv.reader(io.StringIO("".join(idlog.csv_chunks(engine))[1:])))
    [row] = [r for r in export if r[1] == GUEST_MAC]
    assert row[6:8] == [idlog.csv_time(ends_at), "expired"]

    # The device signs in again: its old session is not "replaced" a minute after it ended.
    with storage.begin(engine) as conn:
        sessions.grant_access(conn, GUEST_MAC, "10.77.0.11", "+79161234567", 60)
    before = session_rows(app)[0]
    assert before.ended_at is None and before.end_reason is None  # nothing above wrote it
    with engine.connect() as conn:
        assert conn.execute(select(storage.verification.c.state).where(
            storage.verification.c.token == waiting.token)).scalar() == "pending"

    assert sessions.close_expired(engine) == 1
    assert verification.expire_overdue(engine) is None
    after = session_rows(app)[0]
    assert (after.ended_at, after.end_reason) == (ends_at, "expired")
