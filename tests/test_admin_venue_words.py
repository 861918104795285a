"""The admin pages in the venue's time zone and in the admin's words: no stored English codes or
UTC times where a venue's staff read them."""

import re
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from admin_support import admin, settings_form, stored_settings  # noqa: F401
from conftest import GUEST_MAC
from portal import settings, storage

T0 = datetime(2025, 3, 1, 22, 30, tzinfo=timezone.utc)  # already 2 March in Moscow (01:30)


def use_zone(app, name):
    settings.save(app.extensions["callpass"], {"venue.timezone": name}, "test")


def add_session(app, started, mac):
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(insert(storage.access_session).values(
            mac=mac, ip="10.77.0.11", phone="+79161234567", started_at=started,
            ends_at=started + timedelta(hours=1), ended_at=started + timedelta(hours=1),
            end_reason="expired"))


def add_verification(app, created, state="confirmed"):
    with app.extensions["callpass"].engine.begin() as conn:
        conn.execute(insert(storage.verification).values(
            token=f"t{created.timestamp()}", phone="+79161234567", mac=GUEST_MAC, ip="10.77.0.11",
            call_number="+74950000000", state=state, created_at=created,
            expires_at=created + timedelta(minutes=5)))


def test_time_zone_setting_is_checked_and_saved(app, admin):
    refused = admin.post("/admin/settings", settings_form(app, **{"venue.timezone": "Mars/Base"}))
    assert refused.status_code == 400
    assert 'id="venue.timezone-error" role="alert">Enter a time zone name such as Europe/Moscow' \
        in refused.get_data(as_text=True)
    assert stored_settings(app) == {}
    saved = admin.post("/admin/settings", settings_form(app, **{"venue.timezone": "Europe/Kyiv"}))
    assert saved.status_code == 303
    assert stored_settings(app) == {"venue.timezone": "Europe/Kyiv"}


def test_tables_and_day_filters_use_the_venue_time_zone(app, admin):
    use_zone(app, "Europe/Moscow")
    add_session(app, T0, "02:cc:00:00:00:aa")
    page = admin.get("/admin/log").get_data(as_text=True)
    assert "2025-03-02 01:30:00 MSK" in page and "22:30" not in page
    assert "2025-03-02 01:30 MSK" in admin.get("/admin/sessions").get_data(as_text=True)
    # The days of the filter are Moscow days: 22:30 UTC on 1 March is 2 March there.
    second = admin.get("/admin/log?from=2025-03-02&to=2025-03-02").get_data(as_text=True)
    first = admin.get("/admin/log?from=2025-03-01&to=2025-03-01").get_data(as_text=True)
    assert "02:cc:00:00:00:aa" in second and "02:cc:00:00:00:aa" not in first


def test_today_on_the_dashboard_is_the_venues_day(app, admin):
    zone = ZoneInfo("Asia/Kamchatka")  # UTC+12: its day rarely matches the UTC one
    use_zone(app, "Asia/Kamchatka")
    midnight = datetime.combine(datetime.now(zone).date(), time.min, tzinfo=zone)
    add_verification(app, midnight - timedelta(minutes=1))  # yesterday there
    add_verification(app, midnight + timedelta(seconds=1))  # today there
    page = admin.get("/admin/").get_data(as_text=True)
    assert '<span class="figure">1</span><span class="label">today: confirmed' in page
    assert "Asia/Kamchatka" in page


def test_russian_dashboard_has_no_english_left(app, admin, make_guest):
    guest = make_guest("10.77.0.11", GUEST_MAC)
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    page = admin.get("/admin/?lang=ru").get_data(as_text=True)
    assert "подтверждено проверок: 1" in page and "verification(s)" not in page
    assert "Баланс: 250.80 RUB" in page
    assert "Бесплатный Wi-Fi" in page and "Free Wi-Fi" not in page


def test_provider_card_does_not_say_answers_beside_a_newer_error(app, admin, make_guest,
                                                               simulator):
    assert "Answers. Balance" in admin.get("/admin/").get_data(as_text=True)  # checked, cached
    simulator.state.set_knobs(error_code=2)
    assert make_guest("10.77.0.12", "02:cc:00:00:00:12").start("+79161234500").status_code == 503
    page = admin.get("/admin/").get_data(as_text=True)
    assert "Answers. Balance" not in page
    assert "Does not answer as it should." in page


def test_audit_details_are_in_words(app, admin, make_guest):
    guest = make_guest("10.77.0.11", GUEST_MAC)
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    page = admin.get("/admin/sessions").get_data(as_text=True)
    session_id = re.search(r"/admin/sessions/(\d+)/end", page).group(1)
    admin.post(f"/admin/sessions/{session_id}/end", page="/admin/sessions")
    admin.get("/admin/log.csv?from=2025-03-01")
    audit_page = admin.get("/admin/audit?lang=ru").get_data(as_text=True)
    assert f"сеанс {session_id}: {GUEST_MAC}, +79161234567" in audit_page
    assert "сеансы, начатые с 2025-03-01 по сейчас" in audit_page
    assert "sessions started" not in audit_page and '{"' not in audit_page
