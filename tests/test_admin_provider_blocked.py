"""When the provider has blocked the venue's address (SMSC error 4), the dashboard says so plainly
and tells the admin what to do."""

from datetime import timedelta

import pytest

from admin_support import admin  # noqa: F401
from portal import settings, storage
from portal.simulator import SimulatorServer

BLOCKED = "The provider has blocked this venue's internet address."
STEPS = ("Check the provider login and password, or the API key, on the settings page.",
         "Then wait about 30 minutes: the provider lifts the block by itself.",
         "Guests cannot: callpass keeps every guest away from the provider's API.")


@pytest.fixture
def strict_provider():
    """A simulator that takes only its own login and password, and blocks an address after five
    wrong ones within 30 minutes, as SMSC does."""
    server = SimulatorServer(callback_url="http://127.0.0.1:9/unset", login="venue",
                             password="the right password").start()
    yield server
    server.stop()


def dashboard(app, admin):
    app.extensions["callpass"].cache.pop("provider_status", None)  # ask the provider now
    return admin.get("/admin/").get_data(as_text=True)


def test_wrong_logins_until_the_provider_blocks_the_venue(app, admin, make_guest, strict_provider):
    settings.save(app.extensions["callpass"], {"provider.base_url": strict_provider.url,
                                               "provider.password": "a wrong password"}, "boss")
    guest = make_guest("10.77.0.11", "02:cc:00:00:00:11")
    assert guest.start("+79161234567").status_code == 503  # wrong login: error 2

    page = dashboard(app, admin)  # the balance check is the second wrong login
    assert "wrong login or password" in page
    assert 'id="provider-blocked"' not in page

    for n in range(3):
        make_guest(f"10.77.0.{20 + n}", f"02:cc:00:00:00:{20 + n}").start("+7916123450" + str(n))
    page = dashboard(app, admin)  # the provider now answers error 4 to everything
    assert "provider error 4" in page
    assert 'id="provider-blocked" role="alert"' in page and BLOCKED in page
    for step in STEPS:
        assert step in page
    assert 'href="/admin/settings#provider.login"' in page


def failed_verification(app, minutes_ago, failure):
    now = storage.utcnow() - timedelta(minutes=minutes_ago)
    with storage.begin(app.extensions["callpass"].engine) as conn:
        conn.execute(storage.verification.insert().values(
            token=f"t{minutes_ago}", phone="+79161234567", mac="02:cc:00:00:00:11",
            ip="10.77.0.11", call_number="", state="failed", failure=failure,
            failure_code=int(failure.split()[2].rstrip(":")), created_at=now, expires_at=now))


def test_a_block_is_shown_for_the_30_minutes_it_lasts(app, admin):
    failed_verification(app, 31, "provider error 4: IP address temporarily blocked")
    page = dashboard(app, admin)
    assert "Balance: 250.80" in page and 'id="provider-blocked"' not in page

    failed_verification(app, 5, "provider error 4: IP address temporarily blocked")
    page = dashboard(app, admin)
    assert 'id="provider-blocked"' in page  # the provider answers the balance, not wait_call

    failed_verification(app, 1, "provider error 2: invalid login or password")
    assert 'id="provider-blocked"' not in dashboard(app, admin)
