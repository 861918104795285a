"""The admin side under a reviewer's hand: an old cookie meets a new account of the same name,
guesses arrive all at once, two admins remove each other at the same instant, and typed
addresses carry numbers and days far out of range."""

import threading

import pytest
from admin_support import (ADMIN_NAME, ADMIN_PASSWORD, admin, audit_rows,  # noqa: F401
                           csrf_token, settings_form, sign_in, venue_settings_form)
from conftest import open_session
from sqlalchemy import select
from test_venues import add_venue, app, cfg, engine_of, venue_admin  # noqa: F401

from portal import auth, settings, storage

NEW_PASSWORD = "a brand new password 7"


def chain_admin(app, name):
    """Another admin of the whole chain, signed in on its own browser."""
    auth.add_admin(engine_of(app), name, ADMIN_PASSWORD)
    client = app.test_client()
    assert sign_in(client, name).status_code == 303
    return client


def admin_names(app):
    return [row.name for row in auth.list_admins(engine_of(app))]


def all_at_once(count, request):
    """Run request(n, barrier) for n in range(count), each on a thread of its own; each waits at
    the barrier once ready, so that all go on together. Returns what they returned."""
    barrier = threading.Barrier(count)
    answers = [None] * count

    def run(n):
        answers[n] = request(n, barrier)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_a_removed_admins_browser_is_not_signed_in_to_a_new_account_of_the_same_name(app, admin):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    add_venue(app, "tverskaya", nas_identifier="MT-Tver")
    old = venue_admin(app, "anna", "arbat")
    assert admin.post("/admin/admins/anna/remove", page="/admin/admins").status_code == 303
    assert old.get("/admin/").status_code == 303
    # SQLite gives the new account the removed one's id again; PostgreSQL a new one.
    assert admin.post("/admin/admins/add", {"name": "anna", "password": "another secret 42",
                                            "repeated": "another secret 42", "venue": "tverskaya"},
                      page="/admin/admins").status_code == 303
    assert old.get("/admin/settings").status_code == 303  # to the sign-in page
    assert old.get("/admin/").headers["Location"].startswith("/admin/login")


def test_the_log_refuses_days_outside_the_years_2000_to_2100_in_words(app, admin):
    # East of UTC, the first day of year 1 starts before any time a database can hold.
    assert admin.post("/admin/settings", settings_form(
        app, **{"venue.timezone": "Asia/Tokyo"})).status_code == 303
    for query in ("to=9999-12-31", "from=0001-01-01", "from=1999-12-31", "to=2101-01-01"):
        page = admin.get(f"/admin/log?{query}")
        assert page.status_code == 400, query
        assert "Enter days of the years 2000 to 2100." in page.get_data(as_text=True)
    assert admin.get("/admin/log?from=2000-01-01&to=2100-12-31").status_code == 200


def test_an_export_of_days_beyond_the_year_2100_is_refused_and_not_recorded(app, admin):
    open_session(app, "02:00:00:00:00:01", "10.77.0.2", "+79161234567", 60)
    answer = admin.get("/admin/log.csv?to=9999-12-31")
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/log"
    assert "Enter days of the years 2000 to 2100." in \
        admin.get("/admin/log").get_data(as_text=True)
    assert "export" not in [row.action for row in audit_rows(app)]


def test_guesses_sent_all_at_once_from_one_address_get_five_tries(app):
    def guess(n, barrier):
        browser = app.test_client()
        browser.environ_base["REMOTE_ADDR"] = "127.0.0.9"
        token = csrf_token(browser)
        barrier.wait(30)
        # A name without an account: no account lock, only the address limit holds.
        return browser.post("/admin/login", data={"name": "nobody", "password": f"guess {n}",
                                                  "csrf_token": token}).status_code

    codes = all_at_once(20, guess)
    assert sorted(codes) == [401] * 5 + [429] * 15


def test_wrong_current_passwords_on_the_change_password_form_are_limited(app, admin):
    def change(current):
        return admin.post("/admin/admins/password", {"current": current, "password": NEW_PASSWORD,
                                                     "repeated": NEW_PASSWORD},
                          page="/admin/admins")

    assert [change(f"guess number {n}").status_code for n in range(5)] == [400] * 5
    refused = change(ADMIN_PASSWORD)  # even the right one, until the limit's window is over
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many wrong current passwords. Try again after" in refused.get_data(as_text=True)
    assert sign_in(app.test_client()).status_code == 303  # the password is unchanged


def test_own_browser_stays_known_after_changing_the_password_on_the_page(app, admin):
    assert admin.post("/admin/admins/password", {"current": ADMIN_PASSWORD,
                                                 "password": NEW_PASSWORD,
                                                 "repeated": NEW_PASSWORD},
                      page="/admin/admins").status_code == 303
    for n in range(8):  # guesses from elsewhere lock the account for browsers it does not know
        stranger = app.test_client()
        stranger.environ_base["REMOTE_ADDR"] = f"127.0.0.{10 + n}"
        sign_in(stranger, ADMIN_NAME, f"guess {n} xxxxx")
    assert sign_in(app.test_client(), ADMIN_NAME, NEW_PASSWORD).status_code == 429
    admin.post("/admin/logout", page="/admin/")
    assert sign_in(admin.client, ADMIN_NAME, NEW_PASSWORD).status_code == 303


def test_two_chain_admins_removing_each_other_at_once_leave_one(app, admin, monkeypatch):
    anna = chain_admin(app, "anna")
    removal = threading.Barrier(2)
    remove_admin = auth.remove_admin

    def remove_together(*args, **kw):
        removal.wait(30)  # both requests are past the page's own checks before either removes
        return remove_admin(*args, **kw)

    monkeypatch.setattr(auth, "remove_admin", remove_together)
    removals = [(admin.client, "anna"), (anna, ADMIN_NAME)]  # each removes the other

    def remove(n, barrier):
        browser, name = removals[n]
        token = csrf_token(browser, "/admin/admins")
        barrier.wait(30)
        return browser.post(f"/admin/admins/{name}/remove",
                            data={"csrf_token": token}).status_code

    assert all_at_once(2, remove) == [303, 303]
    assert len(admin_names(app)) == 1
    assert [row.action for row in audit_rows(app)].count("admin-remove") == 1


def test_a_venue_admins_sign_in_is_in_her_venues_audit_log(app, admin):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    anna = venue_admin(app, "anna", "arbat")
    page = anna.get("/admin/audit").get_data(as_text=True)
    assert "signed in" in page and ADMIN_NAME not in page


def test_a_log_page_past_the_end_shows_the_last_page(app, admin):
    open_session(app, "02:00:00:00:00:01", "10.77.0.2", "+79161234567", 60)
    for page_number in ("2", "99999999999999999999"):
        page = admin.get(f"/admin/log?page={page_number}")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "Page 1 of 1" in html and "02:00:00:00:00:01" in html


def test_an_audit_page_before_an_id_out_of_range_is_the_newest_or_an_empty_one(app, admin):
    newest = admin.get("/admin/audit?before=99999999999999999999")
    assert newest.status_code == 200 and "signed in" in newest.get_data(as_text=True)
    oldest = admin.get("/admin/audit?before=-99999999999999999999")
    assert oldest.status_code == 200 and "Nothing recorded yet." in oldest.get_data(as_text=True)


@pytest.mark.parametrize("minutes", ["99999999999", "-99999999999", "1000000000000000"])
def test_extending_a_session_by_a_huge_number_of_minutes_is_refused_in_words(app, admin,
                                                                             minutes):
    session_id = open_session(app, "02:00:00:00:00:01", "10.77.0.2", "+79161234567", 60)
    with engine_of(app).connect() as conn:
        ends_at = conn.execute(select(storage.access_session.c.ends_at)).scalar()
    answer = admin.post(f"/admin/sessions/{session_id}/extend", {"minutes": minutes},
                        page="/admin/sessions")
    assert answer.status_code == 303
    assert "A session can run at most" in admin.get("/admin/sessions").get_data(as_text=True)
    with engine_of(app).connect() as conn:
        assert conn.execute(select(storage.access_session.c.ends_at)).scalar() == ends_at


def test_a_next_page_with_a_line_break_goes_to_the_dashboard(app, admin):
    target = "/admin/%0d%0aX:%201"
    signed_in = admin.get(f"/admin/login?next={target}")
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/admin/"
    browser = app.test_client()
    answer = browser.post(f"/admin/login?next={target}", data={
        "name": ADMIN_NAME, "password": ADMIN_PASSWORD, "csrf_token": csrf_token(browser)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/"


def test_the_audit_log_names_the_venue_whose_settings_a_chain_admin_changed(app, admin):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    assert admin.post("/admin/settings?venue=arbat", venue_settings_form(
        app, **{"venue.name.en": "Cafe Arbat"})).status_code == 303
    assert "venue arbat: Venue name" in admin.get("/admin/audit").get_data(as_text=True)
    assert "заведение arbat: Название заведения" in \
        admin.get("/admin/audit?lang=ru").get_data(as_text=True)
