"""A chain of venues on one callpass: which venue a guest arrives through (MikroTik identity,
RADIUS NAS, UniFi site), the venue's own settings over the chain's, a router letting in only its
own venue's sessions, and the admin pages — a venue's admin sees its venue and nothing else.

Through the Flask test client; FreeRADIUS and two nodes behind HAProxy are in tests/test_nodes.py.
"""

import csv
import io
import itertools
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from admin_support import (ADMIN_PASSWORD, Admin, admin, command_config,  # noqa: F401
                           settings_form, sign_in, venue_settings_form)
from conftest import notify, settle
from sqlalchemy import func, select

from portal import auth, sessions, settings, storage, venues
from portal.storage import MAIN_VENUE, access_session, audit, verification

RADIUS_TOKEN = "radius-token-0123456789"
FREERADIUS = {"REMOTE_ADDR": "127.0.0.1"}
CALLS = itertools.count()


def call_ts():
    """A notification's ts near now (the callback refuses one 10 minutes away, and this module may
    run that long after the suite started), each call a later one than the last."""
    return int(time.time()) - 60 + next(CALLS)


@pytest.fixture
def cfg(cfg):
    cfg["gateway"]["firewall"] = "radius"
    cfg["radius"].update(token=RADIUS_TOKEN, clients=["127.0.0.1/32"], secret="nas-secret")
    return cfg


@pytest.fixture
def app(configured_app):
    return configured_app


def engine_of(app):
    return app.extensions["callpass"].engine


def add_venue(app, slug, **names):
    return venues.save(engine_of(app), {"slug": slug, "name": slug.title(), "nas_identifier": None,
                                        "nas_ip": None, "unifi_site": None, **names})


def mikrotik_guest(app, mac, identity, phone):
    """A guest arriving through a MikroTik hotspot whose identity is `identity`, who types phone
    and calls: returns its browser."""
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR="203.0.113.5")
    arrived = browser.post("/mikrotik", data={
        "mac": mac, "ip": "10.5.50.10", "link-login-only": "http://10.5.50.1/login",
        "link-orig": "", "chap-id": "", "chap-challenge": "", "identity": identity})
    assert arrived.status_code == 303
    started = browser.post("/", data={"phone": phone})
    assert started.status_code == 303, started.get_data(as_text=True)
    # Each call its own ts: the same phone and ts again would be a replay.
    assert notify(browser, phone.lstrip("+"), ts=call_ts()).status_code == 200
    settle(app)
    return browser


def session_of(app, mac):
    with engine_of(app).connect() as conn:
        return conn.execute(select(access_session).where(access_session.c.mac == mac)
                            .order_by(access_session.c.id.desc())).first()


def authorize(app, mac, **nas):
    body = {name: {"type": "string", "value": [value]}
            for name, value in {"User-Name": mac.upper(), "User-Password": "",
                                "Calling-Station-Id": mac.upper(), **nas}.items()}
    return app.test_client().post(f"/radius/{RADIUS_TOKEN}/authorize", json=body,
                                  environ_base=FREERADIUS)


def test_a_single_venue_install_has_the_main_venue_and_nothing_else(app):
    assert venues.slugs(engine_of(app)) == {MAIN_VENUE: "main"}
    assert not venues.is_chain(engine_of(app))
    mikrotik_guest(app, "02:00:00:00:00:01", "", "+79161230001")
    assert session_of(app, "02:00:00:00:00:01").venue_id == MAIN_VENUE
    # Any router is the main venue's: its sessions are let in whatever the NAS says.
    assert authorize(app, "02:00:00:00:00:01", **{"NAS-Identifier": "any-router"}).status_code \
        == 200


def test_a_guest_belongs_to_the_venue_its_router_names_and_only_that_router_lets_it_in(app):
    arbat = add_venue(app, "arbat", nas_identifier="MT-Arbat")
    tverskaya = add_venue(app, "tverskaya", nas_identifier="MT-Tver", nas_ip="192.0.2.20")
    mikrotik_guest(app, "02:00:00:00:00:02", "MT-Arbat", "+79161230002")
    session = session_of(app, "02:00:00:00:00:02")
    assert session.venue_id == arbat
    with engine_of(app).connect() as conn:
        assert conn.execute(select(verification.c.venue_id)
                            .where(verification.c.id == session.verification_id)).scalar() == arbat

    mac = "02:00:00:00:00:02"
    assert authorize(app, mac, **{"NAS-Identifier": "MT-Arbat"}).status_code == 200
    refused = authorize(app, mac, **{"NAS-Identifier": "MT-Tver"})
    assert refused.status_code == 401
    assert "another venue" in refused.get_json()["reply:Reply-Message"]
    # Without a NAS-Identifier the address names the router (our FreeRADIUS site fills it in).
    assert authorize(app, mac, **{"NAS-IP-Address": "192.0.2.20"}).status_code == 401
    # A router no venue names is the main venue's: not this session's either.
    assert authorize(app, mac, **{"NAS-Identifier": "unknown"}).status_code == 401

    # The device moves to Tverskaya and signs in there: one open session, the new venue's.
    mikrotik_guest(app, mac, "MT-Tver", "+79161230002")
    with engine_of(app).connect() as conn:
        open_rows = conn.execute(select(access_session.c.venue_id).where(
            access_session.c.mac == mac, access_session.c.ended_at.is_(None))).scalars().all()
    assert open_rows == [tverskaya]
    assert authorize(app, mac, **{"NAS-IP-Address": "192.0.2.20"}).status_code == 200
    assert authorize(app, mac, **{"NAS-Identifier": "MT-Arbat"}).status_code == 401

    # What each router reports lands on the session at its own venue (the volume the law asks
    # for stays where it was used), even after the device moved on.
    for identity, octets in (("MT-Arbat", 1000), ("MT-Tver", 2000)):
        body = {name: {"type": "string", "value": [value]} for name, value in {
            "Acct-Status-Type": "Stop", "User-Name": mac.upper(),
            "Calling-Station-Id": mac.upper(), "NAS-Identifier": identity,
            "Acct-Session-Id": f"s-{identity}", "Acct-Input-Octets": str(octets)}.items()}
        assert app.test_client().post(f"/radius/{RADIUS_TOKEN}/accounting", json=body,
                                      environ_base=FREERADIUS).status_code == 204
    with engine_of(app).connect() as conn:
        volume = dict(conn.execute(
            select(access_session.c.venue_id, storage.nas_session.c.bytes_in)
            .join(storage.nas_session,
                  storage.nas_session.c.access_session_id == access_session.c.id)).all())
    assert volume == {arbat: 1000, tverskaya: 2000}


def test_access_points_name_their_venue_by_the_network_in_called_station_id(app):
    # Access points that all send the same NAS-Identifier (or their own MAC as one): the
    # network name after the MAC in Called-Station-Id names the venue.
    arbat = add_venue(app, "arbat", called_station="Arbat Guest")
    whole = add_venue(app, "lobby", called_station="02-00-00-00-00-AA")
    mac = "02:00:00:00:00:07"
    open_session_at(app, mac, arbat)
    for station in ("AA-BB-CC-DD-EE-01:Arbat Guest", "aa:bb:cc:dd:ee:02:Arbat Guest"):
        assert authorize(app, mac, **{"Called-Station-Id": station,
                                      "NAS-Identifier": "UniFi"}).status_code == 200
    # Another network, a station no venue names, or only a look-alike: not arbat's router.
    for station in ("AA-BB-CC-DD-EE-01:Tver Guest", "Arbat Guest!", "02-00-00-00-00-AA"):
        assert authorize(app, mac, **{"Called-Station-Id": station}).status_code == 401
    assert venues.named_by(engine_of(app), called_station="02-00-00-00-00-AA") == whole
    # A NAS-Identifier a venue has wins over the network.
    add_venue(app, "tver", nas_identifier="AP-Tver")
    assert authorize(app, mac, **{"Called-Station-Id": "AA-BB-CC-DD-EE-01:Arbat Guest",
                                  "NAS-Identifier": "AP-Tver"}).status_code == 401


def open_session_at(app, mac, venue_id):
    with storage.begin(engine_of(app)) as conn:
        sessions.grant_access(conn, mac, "10.5.50.7", "+79161230007", 60, venue_id=venue_id)


def test_a_unifi_site_names_its_venue(cfg):
    from unifi_standin import StandInController

    from portal import create_app

    controller = StandInController().start()
    cfg["gateway"]["firewall"] = "unifi"
    cfg["unifi"].update(url=controller.url, username="callpass", password="unifi-password")
    app = create_app(cfg)
    try:
        storage.upgrade(engine_of(app))
        lobby = add_venue(app, "lobby", unifi_site="hotel-lobby")
        browser = app.test_client()
        browser.environ_base.update(REMOTE_ADDR="203.0.113.5")
        browser.get("/guest/s/hotel-lobby/?id=02:00:00:00:00:20&url=http%3A%2F%2Fexample.com%2F")
        assert browser.post("/", data={"phone": "+79161230020"}).status_code == 303
        notify(browser, "79161230020")
        settle(app)
        assert session_of(app, "02:00:00:00:00:20").venue_id == lobby
    finally:
        controller.stop()
        app.extensions["callpass"].firewall_worker.stop()
        engine_of(app).dispose()


def test_a_venue_has_its_own_name_and_session_rules_over_the_chains(app, admin):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    page = admin.get("/admin/settings?venue=arbat")
    assert page.status_code == 200 and 'id="venue-settings"' in page.get_data(as_text=True)
    assert "gateway.garden" not in page.get_data(as_text=True)  # the chain's, not the venue's
    form = settings_form(app, **{"venue.name.en": "Cafe Arbat", "portal.session_minutes": "45"})
    # As the page has it: a venue's keys only (venue.name.en is venue.name's English field).
    form = {key: value for key, value in form.items()
            if key in settings.VENUE_CHAIN_KEYS or key.rsplit(".", 1)[0] in settings.PER_LANGUAGE}
    assert "gateway.garden" not in form
    saved = admin.post("/admin/settings?venue=arbat", form)
    assert saved.status_code == 303 and "venue=arbat" in saved.headers["Location"]

    arbat = mikrotik_guest(app, "02:00:00:00:00:03", "MT-Arbat", "+79161230003")
    elsewhere = mikrotik_guest(app, "02:00:00:00:00:04", "", "+79161230004")
    assert "Cafe Arbat" in arbat.get("/").get_data(as_text=True)
    assert "Cafe Arbat" not in elsewhere.get("/").get_data(as_text=True)
    minutes = {mac: (row.ends_at - row.started_at).total_seconds() / 60
               for mac in ("02:00:00:00:00:03", "02:00:00:00:00:04")
               for row in [session_of(app, mac)]}
    chain = app.extensions["callpass"].config["portal"]["session_minutes"]
    assert minutes == {"02:00:00:00:00:03": 45, "02:00:00:00:00:04": chain} and chain != 45


def venue_admin(app, name, venue_slug):
    auth.add_admin(engine_of(app), name, ADMIN_PASSWORD,
                   venues.by_slug(engine_of(app), venue_slug).id)
    client = app.test_client()
    assert sign_in(client, name).status_code == 303
    return Admin(client)


def test_an_admin_of_one_venue_sees_that_venue_and_nothing_of_another(app, admin, tmp_path):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    add_venue(app, "tverskaya", nas_identifier="MT-Tver")
    mikrotik_guest(app, "02:00:00:00:00:05", "MT-Arbat", "+79161230005")
    mikrotik_guest(app, "02:00:00:00:00:06", "MT-Tver", "+79161230006")
    anna = venue_admin(app, "anna", "arbat")

    listing = anna.get("/admin/sessions").get_data(as_text=True)
    assert "02:00:00:00:00:05" in listing and "02:00:00:00:00:06" not in listing
    other = session_of(app, "02:00:00:00:00:06")
    assert anna.get(f"/admin/sessions/{other.id}/end").status_code == 404
    assert anna.post(f"/admin/sessions/{other.id}/end", page="/admin/sessions").status_code == 404
    assert anna.post(f"/admin/sessions/{other.id}/extend", {"minutes": "60"},
                     page="/admin/sessions").status_code == 404
    assert session_of(app, "02:00:00:00:00:06").ended_at is None

    log = anna.get("/admin/log").get_data(as_text=True)
    assert "02:00:00:00:00:05" in log and "02:00:00:00:00:06" not in log
    rows = exported(anna)
    assert [row[1] for row in rows[1:]] == ["02:00:00:00:00:05"] and len(rows[0]) == 10
    dashboard = anna.get("/admin/").get_data(as_text=True)
    assert 'id="handler-url"' not in dashboard  # the provider's secret is the chain's

    # Her settings page is her venue's, whatever venue the address asks for.
    own = anna.get("/admin/settings?venue=tverskaya").get_data(as_text=True)
    assert "settings of the venue arbat" in own and "provider.login" not in own

    for page in ("/admin/venues", "/admin/venues/new", "/admin/blocked"):
        assert anna.get(page).status_code == 403, page
    assert anna.post("/admin/venues/new", {"slug": "mine", "name": "Mine"},
                     page="/admin/sessions").status_code == 403
    assert anna.post("/admin/blocked", {"target": "+79161230006", "reason": "x"},
                     page="/admin/sessions").status_code == 403
    assert len(venues.slugs(engine_of(app))) == 3

    # Her admins page lists her venue's admins; an admin she adds is of her venue.
    admins = anna.get("/admin/admins").get_data(as_text=True)
    assert "anna" in admins and "boss" not in admins
    added = anna.post("/admin/admins/add", {"name": "pyotr", "password": ADMIN_PASSWORD,
                                            "repeated": ADMIN_PASSWORD, "venue": "tverskaya"},
                       page="/admin/admins")
    assert added.status_code == 303
    by_name = {row.name: row.venue_id for row in auth.list_admins(engine_of(app))}
    assert by_name["pyotr"] == by_name["anna"] == venues.by_slug(engine_of(app), "arbat").id
    assert anna.post("/admin/admins/boss/remove", page="/admin/admins").status_code == 404
    # The only chain admin is the one who cannot be removed, venue admins beside it or not.
    boss_page = admin.get("/admin/admins").get_data(as_text=True)
    assert boss_page.count("The last admin cannot be removed.") == 1
    assert "The last admin cannot be removed." not in anna.get("/admin/admins").get_data(
        as_text=True)

    # The audit log: her venue's admins' entries, not the chain admin's.
    admin.get("/admin/log.csv")
    audit_page = anna.get("/admin/audit").get_data(as_text=True)
    assert "pyotr" in audit_page and "boss" not in audit_page

    # The chain admin sees both venues, and the export names each row's venue.
    rows = exported(admin)
    assert rows[0][-1] == "Venue" and len(rows[0]) == 11
    assert {(row[1], row[-1]) for row in rows[1:]} == {("02:00:00:00:00:05", "arbat"),
                                                       ("02:00:00:00:00:06", "tverskaya")}


def exported(admin_browser):
    answer = admin_browser.get("/admin/log.csv")
    assert answer.status_code == 200
    return list(csv.reader(io.StringIO(answer.get_data().decode("utf-8-sig"))))


def test_the_venue_list_counts_who_is_online_and_venues_are_added_and_checked(app, admin):
    arbat = add_venue(app, "arbat", nas_identifier="MT-Arbat")
    mikrotik_guest(app, "02:00:00:00:00:07", "MT-Arbat", "+79161230007")
    page = admin.get("/admin/venues").get_data(as_text=True)
    row = page.split('id="venue-arbat"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="Online now" class="online">1</td>' in row

    added = admin.post("/admin/venues/new", {"slug": "lobby", "name": "Hotel lobby",
                                             "unifi_site": "lobby", "nas_ip": " 192.0.2.30 "},
                       page="/admin/venues/new")
    assert added.status_code == 303
    lobby = venues.by_slug(engine_of(app), "lobby")
    assert (lobby.name, lobby.unifi_site, lobby.nas_ip, lobby.nas_identifier) == \
        ("Hotel lobby", "lobby", "192.0.2.30", None)

    before = venues.slugs(engine_of(app))
    for form, field in (({"slug": "arbat", "name": "Again"}, "slug"),
                        ({"slug": "new-one", "name": "X", "nas_identifier": "MT-Arbat"},
                         "nas_identifier"),
                        ({"slug": "Bad Slug", "name": "X"}, "slug"),
                        ({"slug": "ok", "name": ""}, "name"),
                        ({"slug": "ok", "name": "X", "nas_ip": "192.0.2"}, "nas_ip"),
                        ({"slug": "ok", "name": "X", "unifi_site": "a b"}, "unifi_site")):
        refused = admin.post("/admin/venues/new", form, page="/admin/venues/new")
        assert refused.status_code == 400, form
        assert f'id="{field}-error"' in refused.get_data(as_text=True), form
    assert venues.slugs(engine_of(app)) == before

    changed = admin.post(f"/admin/venues/{arbat}", {"slug": "arbat", "name": "Arbat street",
                                                    "nas_identifier": "MT-Arbat-2"},
                         page=f"/admin/venues/{arbat}")
    assert changed.status_code == 303
    assert venues.by_id(engine_of(app), arbat).nas_identifier == "MT-Arbat-2"
    assert admin.get("/admin/venues/9999").status_code == 404
    with engine_of(app).connect() as conn:
        actions = conn.execute(select(audit.c.action)).scalars().all()
    assert actions.count("venue-add") == 1 and actions.count("venue-change") == 1


def test_venues_are_added_changed_and_listed_on_the_command_line(app, tmp_path):
    config = command_config(tmp_path, app)

    def venue(*args):
        return subprocess.run([sys.executable, "-m", "portal", "venue", *args, "--config", config],
                              text=True, capture_output=True, timeout=30)

    added = venue("add", "arbat", "--name", "Cafe Arbat", "--identity", "MT-Arbat")
    assert added.returncode == 0, added.stderr
    for args, words in ((("add", "arbat"), "SLUG: The venue “arbat” has this already."),
                        (("add", "Bad Slug"), "SLUG: Use 1 to 40"),
                        (("add", "tver", "--identity", "MT-Arbat"), "--identity: The venue"),
                        (("add", "tver", "--address", "192.0.2"), "--address: Enter an IP address"),
                        (("set", "nowhere", "--name", "X"), "there is no venue 'nowhere'")):
        refused = venue(*args)
        assert refused.returncode == 1 and words in refused.stderr, (args, refused.stderr)
    assert venue("set", "arbat", "--address", "192.0.2.40", "--identity", "").returncode == 0
    row = venues.by_slug(engine_of(app), "arbat")
    assert (row.name, row.nas_identifier, row.nas_ip) == ("Cafe Arbat", None, "192.0.2.40")
    listed = venue("list").stdout.splitlines()
    assert listed[0].startswith("main\t") and "arbat\tCafe Arbat\taddress=192.0.2.40" in listed[1]
    assert sorted(venues.slugs(engine_of(app)).values()) == ["arbat", "main"]
    with engine_of(app).connect() as conn:
        actions = conn.execute(select(audit.c.action, audit.c.admin)).all()
    assert [action for action, _who in actions] == ["venue-add", "venue-change"]
    assert all(who.startswith("shell") for _action, who in actions)


def test_admin_add_on_the_command_line_takes_a_venue(app, tmp_path):
    add_venue(app, "arbat")
    config = command_config(tmp_path, app)

    def admin_add(*args):
        return subprocess.run([sys.executable, "-m", "portal", "admin", "add", *args,
                               "--config", config], input=ADMIN_PASSWORD + "\n", text=True,
                              capture_output=True, timeout=30)

    assert admin_add("anna", "--venue", "arbat").returncode == 0
    listed = subprocess.run([sys.executable, "-m", "portal", "admin", "list", "--config", config],
                            text=True, capture_output=True, timeout=30).stdout
    assert listed.startswith("anna\tcreated ") and listed.rstrip().endswith("\tvenue arbat")
    refused = admin_add("olga", "--venue", "nowhere")
    assert refused.returncode == 1 and "no venue 'nowhere'" in refused.stderr
    by_name = {row.name: row.venue_id for row in auth.list_admins(engine_of(app))}
    assert by_name == {"anna": venues.by_slug(engine_of(app), "arbat").id}


def test_a_chain_admin_gives_a_venue_a_provider_account_of_its_own(app, admin, simulator):
    from portal.simulator import SimulatorServer

    own = SimulatorServer(callback_url="http://127.0.0.1:9/", secret="x", login="arbat",
                          password="arbat-password").start()
    try:
        add_venue(app, "arbat", nas_identifier="MT-Arbat")
        page = admin.get("/admin/settings?venue=arbat").get_data(as_text=True)
        assert 'id="venue-provider"' in page and "gateway.garden" not in page
        form = {key: value for key, value in settings_form(app).items()
                if key in settings.VENUE_CHAIN_KEYS
                or key.rsplit(".", 1)[0] in settings.PER_LANGUAGE}
        form.update({"provider.base_url": own.url, "provider.login": "arbat",
                     "provider.password": "arbat-password"})
        assert admin.post("/admin/settings?venue=arbat", form).status_code == 303

        chain_asked = simulator.state.request_count()
        mikrotik_guest(app, "02:00:00:00:00:08", "MT-Arbat", "+79161230008")
        assert own.state.request_count() == 1 and simulator.state.request_count() == chain_asked
        mikrotik_guest(app, "02:00:00:00:00:09", "", "+79161230009")  # the main venue's
        assert own.state.request_count() == 1 and simulator.state.request_count() > chain_asked
        assert settings.load(app.extensions["callpass"])["provider"]["login"] == "venue"

        # A venue's admin sees neither the provider account nor can set one.
        anna = venue_admin(app, "anna", "arbat")
        page = anna.get("/admin/settings").get_data(as_text=True)
        assert "provider.login" not in page
        form["provider.login"] = "hijack"
        assert anna.post("/admin/settings", form).status_code == 303
        assert settings.load(app.extensions["callpass"], venues.by_slug(
            engine_of(app), "arbat").id)["provider"]["login"] == "arbat"
    finally:
        own.stop()


def test_the_main_venue_has_no_admins_of_its_own(app, admin, tmp_path):
    refused = admin.post("/admin/admins/add", {"name": "olga", "password": ADMIN_PASSWORD,
                                               "repeated": ADMIN_PASSWORD, "venue": "main"},
                         page="/admin/admins")
    assert refused.status_code == 400 and 'id="venue-error"' in refused.get_data(as_text=True)
    result = subprocess.run([sys.executable, "-m", "portal", "admin", "add", "olga", "--venue",
                             "main", "--config", command_config(tmp_path, app)],
                            input=ADMIN_PASSWORD + "\n", text=True, capture_output=True, timeout=30)
    assert result.returncode == 1 and "main venue" in result.stderr
    assert [row.name for row in auth.list_admins(engine_of(app))] == ["boss"]


def test_the_chains_later_api_key_never_reaches_a_venues_own_provider(app, admin):
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    arbat = venues.by_slug(engine_of(app), "arbat").id
    assert admin.post("/admin/settings?venue=arbat", venue_settings_form(app, **{
        "provider.base_url": "https://venue-provider.example", "provider.login": "arbat",
        "provider.password": "arbat-password"})).status_code == 303
    assert admin.post("/admin/settings", settings_form(
        app, **{"provider.apikey": "CHAIN-SECRET-KEY"})).status_code == 303
    provider = settings.load(app.extensions["callpass"], arbat)["provider"]
    assert (provider["base_url"], provider["login"], provider["password"], provider["apikey"]) \
        == ("https://venue-provider.example", "arbat", "arbat-password", "")


def test_a_venues_own_password_stays_with_the_address_it_was_entered_for(app, admin):
    """The venue has its own login at the chain's address; the chain then moves to another
    provider address: the venue's password is not sent there (the venue keeps its address)."""
    add_venue(app, "arbat", nas_identifier="MT-Arbat")
    arbat = venues.by_slug(engine_of(app), "arbat").id
    old_address = settings.load(app.extensions["callpass"])["provider"]["base_url"]
    assert admin.post("/admin/settings?venue=arbat", venue_settings_form(app, **{
        "provider.login": "arbat", "provider.password": "arbat-password"})).status_code == 303
    assert admin.post("/admin/settings", settings_form(app, **{
        "provider.base_url": "https://new-provider.example",
        "provider.password": "chain-password"})).status_code == 303
    provider = settings.load(app.extensions["callpass"], arbat)["provider"]
    assert (provider["base_url"], provider["password"]) == (old_address, "arbat-password")
    assert settings.load(app.extensions["callpass"])["provider"]["base_url"] \
        == "https://new-provider.example"
