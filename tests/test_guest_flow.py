"""The guest's path through the portal with the real simulator as provider and a recording firewall."""

import re
from datetime import timedelta

from conftest import GUEST_MAC, close_window

from portal import settings, storage
from sqlalchemy import select, update


def test_phone_form_is_the_landing_page(client):
    page = client.get("/")
    assert page.status_code == 200
    assert b'name="phone"' in page.data


def test_guest_gets_a_number_calls_it_and_is_online(guest, firewall, simulator):
    started = guest.start("8 (916) 123-45-67")
    assert started.status_code == 303
    assert started.headers["Location"].startswith("/wait/")

    status = guest.status()
    assert status["state"] == "pending"
    assert status["call_number"].startswith("+7")
    assert 0 < status["expires_in"] <= 300

    wait_page = guest.client.get(f"/wait/{guest.token}")
    assert b"tel:" + status["call_number"].encode() in wait_page.data
    assert firewall.calls == []

    assert guest.call("79161234567").data == b"OK"
    assert guest.status()["state"] == "confirmed"
    assert ("allow", GUEST_MAC, 240 * 60) in firewall.calls
    assert b"You are online" in guest.client.get(f"/wait/{guest.token}").data
    assert b"You are online" in guest.client.get("/").data


def test_a_page_saying_online_reloads_itself_when_the_session_ends(guest, app, simulator):
    guest.start("+7 916 123-45-67")
    guest.call("79161234567")
    # A 4-hour session: the pages look again every 10 minutes (an admin may end it sooner).
    for path in (f"/wait/{guest.token}", "/"):
        assert '<meta http-equiv="refresh" content="600">' in guest.client.get(path).text, path
    with storage.begin(app.extensions["callpass"].engine) as conn:
        conn.execute(update(storage.access_session)
                     .values(ends_at=storage.utcnow() + timedelta(seconds=30)))
    for path in (f"/wait/{guest.token}", "/"):
        page = guest.client.get(path).text
        assert "1 more minute." in page, path
        seconds = int(re.search(r'http-equiv="refresh" content="(\d+)"', page).group(1))
        assert 30 <= seconds <= 32, path  # just after the end


def test_invalid_numbers_get_a_clear_message_and_reach_nothing(guest, firewall, app):
    for typed in ["", "12", "hello", "+7 916 123", "<script>alert(1)</script>", "9" * 60,
                  "+1 555 0100 000000"]:
        page = guest.start(typed)
        assert page.status_code == 400, typed
        assert b'class="error"' in page.data
        assert b"<script>alert" not in page.data
    with app.extensions["callpass"].engine.connect() as conn:
        assert conn.execute(select(storage.verification)).all() == []
    assert firewall.calls == []


def test_device_not_on_the_lan_is_told_so(make_guest, app):
    stranger = make_guest("192.0.2.10", None)
    page = stranger.start("+79161234567")
    assert page.status_code == 403
    assert b"Connect to the Wi-Fi first" in page.data


def test_provider_errors_become_messages_not_500(guest, simulator):
    cases = [(2, 503, b"tell the staff"), (4, 503, b"few minutes"),
             (9, 503, b"wait a minute"), (1, 400, b"did not accept")]
    for i, (code, status, words) in enumerate(cases):
        simulator.state.set_knobs(error_code=code)
        page = guest.start(f"+7916123450{i}")
        assert page.status_code == status, code
        assert words in page.data
    simulator.state.reset()
    simulator.state.set_knobs(http_500=True)
    page = guest.start("+79161234599")
    assert page.status_code == 503
    assert b"not answering" in page.data


def test_starting_verifications_is_rate_limited_per_phone_and_device(app, guest, make_guest):
    """limit_per_phone (3 per 10 minutes) counts one device's attempts for one number; another
    device asking for the same number has its own allowance."""
    codes = []
    for _ in range(4):
        codes.append(guest.start("+79161234567").status_code)
        close_window(app, guest.token)
    assert codes == [303, 303, 303, 429]
    page = guest.start("+79161234567").get_data(as_text=True)
    assert re.search(r"You can try again in (9|10) minutes\.", page)  # 3 per 10 minutes
    assert 'value="+79161234567"' in page
    other = make_guest("10.77.0.21", "02:cc:00:00:01:21")
    assert other.start("+79161234567").status_code == 303


def test_starting_verifications_is_rate_limited_per_device(guest):
    codes = [guest.start(f"+7916123456{i}").status_code for i in range(6)]
    assert codes[:5] == [303] * 5
    assert codes[5] == 429


def test_unknown_token_is_404(client):
    assert client.get("/wait/nope").status_code == 404
    response = client.get("/api/verifications/nope")
    assert response.status_code == 404 and response.is_json


def test_only_attempts_that_reach_the_provider_count_against_the_limits(guest, app, simulator):
    """Typos and "busy, try again" cost the guest nothing; a provider's refusal does."""
    for _ in range(6):
        assert guest.start("123").status_code == 400
    slots = app.extensions["callpass"].provider_slots
    taken = 0
    while slots.acquire(blocking=False):  # every provider slot in use by other guests
        taken += 1
    for _ in range(6):
        busy = guest.start("+79161234567")
        assert busy.status_code == 503 and b"Many guests are signing in" in busy.data
    for _ in range(taken):
        slots.release()
    simulator.state.set_knobs(error_code=1)
    assert guest.start("+79161234567").status_code == 400  # reached the provider: counts
    simulator.state.reset()
    codes = [guest.start(f"+7916123456{i}").status_code for i in range(5)]
    assert codes == [303] * 4 + [429]
    assert "X-Provider-Code" not in guest.start("+79161234560").headers


def test_the_form_follows_the_venues_region(app, guest):
    """A Ukrainian venue shows a Ukrainian example, in the placeholder and in the hint."""
    settings.save(app.extensions["callpass"], {"portal.default_region": "UA"}, "test")
    assert 'placeholder="+380 50 123 4567"' in guest.client.get("/").get_data(as_text=True)
    page = guest.start("050-123-4567 доб.").get_data(as_text=True)
    assert "for example +380 50 123 4567." in page


def test_provider_trouble_is_a_notice_not_an_error_at_the_phone_field(guest, simulator):
    simulator.state.set_knobs(error_code=2)
    page = guest.start("+79161234567").get_data(as_text=True)
    assert 'id="notice" role="alert">Phone sign-in is not working' in page
    assert "aria-invalid" not in page and 'value="+79161234567"' in page
