"""Captive detection: every OS's probe, by path, by probe host and by User-Agent, before and after the
guest's call; other sites' pages; the RFC 8908 API."""

import re
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from conftest import CALLBACK_TOKEN, open_session, signed_fields
from portal import create_app, neighbours, storage
from portal.storage import access_session, utcnow

PORTAL = "http://localhost/"
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Mobile/15E148")
ANDROID_PROBE = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/60.0.3112.32 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
APPLE_PROBE = "CaptiveNetworkSupport-481.80.2 wispr"
NCSI = "Microsoft NCSI"

# (name, Host, path, User-Agent, what an online device gets: (status, body))
PROBES = [
    ("apple", "captive.apple.com", "/hotspot-detect.html", APPLE_PROBE,
     (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>")),
    ("apple-library", "www.apple.com", "/library/test/success.html", APPLE_PROBE,
     (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>")),
    ("apple-by-agent", "www.example.org", "/a1b2c3/index.html", APPLE_PROBE,
     (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>")),
    ("apple-by-host", "captive.apple.com", "/", SAFARI,
     (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>")),
    ("android", "connectivitycheck.gstatic.com", "/generate_204", ANDROID_PROBE, (204, b"")),
    ("android-gen204", "www.google.com", "/gen_204", ANDROID_PROBE, (204, b"")),
    ("android-miui", "connect.rom.miui.com", "/generate_204",
     "Dalvik/2.1.0 (Linux; U; Android 13; 2201117TY MIUI/V14.0.4)", (204, b"")),
    ("android-huawei", "connectivitycheck.platform.hicloud.com", "/generate_204",
     "Dalvik/2.1.0 (Linux; U; Android 10; ELS-NX9)", (204, b"")),
    ("windows", "www.msftconnecttest.com", "/connecttest.txt", NCSI,
     (200, b"Microsoft Connect Test")),
    ("windows-ncsi", "www.msftncsi.com", "/ncsi.txt", NCSI, (200, b"Microsoft NCSI")),
    ("windows-by-agent", "www.example.net", "/", NCSI, (200, b"Microsoft Connect Test")),
    ("firefox", "detectportal.firefox.com", "/success.txt", FIREFOX, (200, b"success\n")),
    ("firefox-canonical", "detectportal.firefox.com", "/canonical.html", FIREFOX,
     (200, b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>')),
    ("probe-path-on-portal-host", "localhost", "/generate_204", ANDROID_PROBE, (204, b"")),
]


def get(guest, host, path, agent=SAFARI):
    return guest.client.get(path, headers={"Host": host, "User-Agent": agent})


def go_online(guest, digits="79161234567"):
    assert guest.start("+" + digits).status_code == 303
    assert guest.call(digits).data == b"OK"
    assert guest.status()["state"] == "confirmed"


def assert_sent_to_portal(response, keeps=None):
    assert response.status_code == 302
    assert response.data  # a redirect page, never an empty answer
    target = urlsplit(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == PORTAL
    assert parse_qs(target.query).get("continue") == ([keeps] if keeps else None)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("name, host, path, agent, online", PROBES, ids=[p[0] for p in PROBES])
def test_probe_redirects_before_and_answers_online_after_the_call(guest, name, host, path, agent,
                                                                  online):
    assert_sent_to_portal(get(guest, host, path, agent))

    go_online(guest)
    answer = get(guest, host, path, agent)
    assert (answer.status_code, answer.data) == online
    assert answer.headers["Cache-Control"] == "no-store"


def test_windows_redirect_page_leads_to_the_portal_before_and_after(guest):
    assert_sent_to_portal(get(guest, "www.msftconnecttest.com", "/redirect"))
    go_online(guest)
    assert_sent_to_portal(get(guest, "www.msftconnecttest.com", "/redirect"))
    assert b"You are online" in get(guest, "localhost", "/").data


def test_other_sites_lead_to_the_portal_which_offers_a_link_back(guest):
    wanted = "http://news.example.com/today?page=2&x=<b>"
    sent = get(guest, "news.example.com", "/today?page=2&x=<b>")
    assert_sent_to_portal(sent, keeps=wanted)
    form = guest.client.get(sent.headers["Location"]).get_data(as_text=True)
    assert 'name="continue" value="http://news.example.com/today?page=2&amp;x=&lt;b&gt;"' in form

    started = guest.client.post("/", data={"phone": "+79161234567", "continue": wanted})
    assert started.status_code == 303
    guest.token = started.headers["Location"].split("/wait/")[1].split("?")[0]
    assert guest.call("79161234567").data == b"OK"
    done = guest.client.get(started.headers["Location"]).get_data(as_text=True)
    assert "You are online" in done
    assert 'href="http://news.example.com/today?page=2&amp;x=&lt;b&gt;"' in done
    # Offered as a link, never followed by itself (the page only reloads itself at the end).
    assert not re.search(r'http-equiv="refresh" content="[^"]*url=', done)

    # Online, but the firewall still sent a page here: the online page, with the link back.
    again = get(guest, "news.example.com", "/today")
    assert_sent_to_portal(again, keeps="http://news.example.com/today")
    online = guest.client.get(again.headers["Location"]).get_data(as_text=True)
    assert "You are online" in online and 'href="http://news.example.com/today"' in online


@pytest.mark.parametrize("unsafe", [
    "javascript:alert(1)", "//evil.example/", "ftp://files.example/x", "http://localhost/admin",
    "http://captive.apple.com/hotspot-detect.html", "http://user:pw@evil.example/",
    "http://evil.example/\nSet-Cookie:x", "data:text/html,<script>alert(1)</script>",
    "http://" + "a" * 600 + ".example/",
])
def test_only_plain_links_to_other_sites_are_offered(guest, unsafe):
    go_online(guest)
    page = guest.client.get("/", query_string={"continue": unsafe}).get_data(as_text=True)
    assert "You are online" in page
    assert 'class="continue"' not in page


def test_the_sign_in_sheets_own_browser_is_not_mistaken_for_a_probe(guest):
    for path in ("/", "/venue"):
        page = get(guest, "localhost", path, APPLE_PROBE)
        assert page.status_code == 200
        assert b"<form" in page.data or b"<h1" in page.data


def test_provider_callback_and_health_answer_under_any_host(guest):
    assert guest.start("+79161234567").status_code == 303
    callback = guest.client.post(f"/callback/smsc/{CALLBACK_TOKEN}", headers={"Host": "203.0.113.7"},
                                 data=signed_fields("79161234567"))
    assert callback.status_code == 200 and callback.data == b"OK"
    assert guest.status()["state"] == "confirmed"
    health = guest.client.get("/healthz", headers={"Host": "gateway.lan"})
    assert health.is_json


def test_a_very_long_address_is_not_kept(guest):
    assert_sent_to_portal(get(guest, "example.com", "/" + "x" * 600))


def test_a_device_off_the_lan_is_sent_to_the_portal(make_guest):
    stranger = make_guest("192.0.2.10", None)
    assert_sent_to_portal(get(stranger, "captive.apple.com", "/hotspot-detect.html", APPLE_PROBE))


@pytest.fixture
def demo_app(cfg, firewall):
    app = create_app(cfg, demo=True, firewall=firewall)
    storage.upgrade(app.extensions["callpass"].engine)
    yield app
    app.extensions["callpass"].engine.dispose()


def test_demo_leaves_other_hosts_alone_but_answers_probes_by_device_state(demo_app, firewall):
    client = demo_app.test_client()  # 127.0.0.1: no neighbour entry, the demo's stand-in MAC
    page = client.get("/", headers={"Host": "192.168.1.20:8080"})
    assert page.status_code == 200 and b'name="phone"' in page.data
    assert_sent_to_portal(client.get("/generate_204", headers={"Host": "192.168.1.20:8080"}))

    open_session(demo_app, neighbours.stand_in_mac("127.0.0.1"), "127.0.0.1", "+79161234567", 60)
    answer = client.get("/generate_204", headers={"Host": "connectivitycheck.gstatic.com"})
    assert (answer.status_code, answer.data) == (204, b"")
    apple = client.get("/hotspot-detect.html", headers={"User-Agent": APPLE_PROBE})
    assert b"Success" in apple.data


def captive_api(guest):
    response = guest.client.get("/api/captive")
    assert response.status_code == 200
    assert response.mimetype == "application/captive+json"
    assert "no-store" in response.headers["Cache-Control"]
    return response.get_json()


def test_captive_api_for_a_device_that_has_not_called(guest):
    assert captive_api(guest) == {
        "captive": True,
        "user-portal-url": PORTAL,
        "venue-info-url": PORTAL + "venue",
        "can-extend-session": False,
    }
    assert guest.client.get("/venue").status_code == 200


def test_captive_api_counts_down_for_a_device_online(guest, app):
    go_online(guest)
    body = captive_api(guest)
    assert body["captive"] is False
    assert body["can-extend-session"] is False
    assert 240 * 60 - 5 <= body["seconds-remaining"] <= 240 * 60

    engine = app.extensions["callpass"].engine
    with engine.begin() as conn:
        conn.execute(update(access_session).values(ends_at=utcnow() + timedelta(seconds=90)))
    first = captive_api(guest)["seconds-remaining"]
    assert 85 <= first <= 90
    time.sleep(1.1)
    assert captive_api(guest)["seconds-remaining"] < first

    with engine.begin() as conn:
        conn.execute(update(access_session).values(ends_at=utcnow() - timedelta(seconds=1)))
    assert captive_api(guest)["captive"] is True
    assert "seconds-remaining" not in captive_api(guest)


def test_the_dnsmasq_snippet_announces_the_api_over_https():
    """The snippet's example lines (commented out until the admin puts in their own name) name
    the API over https, and the portal's name resolves for guests."""
    text = (Path(__file__).resolve().parent.parent / "deploy" / "dnsmasq-callpass.conf").read_text()
    announced = re.search(r'^#dhcp-option=114,"([^"]+)"$', text, re.M).group(1)
    assert len(announced.encode()) <= 255
    api = urlsplit(announced)
    assert api.scheme == "https" and api.path == "/api/captive"
    assert re.search(rf"^#address=/{re.escape(api.hostname)}/[\d.]+$", text, re.M)


def test_guests_are_identified_by_the_socket_never_by_headers(app, make_guest, client):
    """A device with no neighbour entry claims to be a LAN guest through X-Forwarded-For."""
    victim = make_guest("10.77.0.11", "02:cc:00:00:00:11")
    stranger = app.test_client()
    stranger.environ_base.update(REMOTE_ADDR="10.77.0.99")  # not in the neighbour table
    answer = stranger.post("/", data={"phone": "+79161234567"},
                           headers={"X-Forwarded-For": victim.ip, "X-Real-IP": victim.ip,
                                    "Forwarded": f"for={victim.ip}"})
    assert answer.status_code == 403
    engine = app.extensions["callpass"].engine
    with engine.connect() as conn:
        assert conn.execute(storage.verification.select()).all() == []
        assert conn.execute(storage.access_session.select()).all() == []


def test_a_device_that_just_joined_is_found_by_the_probe_path(app, make_guest, client):
    """The probe path reads the neighbour table from a copy up to a second old; an address the
    copy lacks has it read again, so a device that just joined and got online is answered as
    online at once."""
    probe = {"Host": "connectivitycheck.gstatic.com"}
    assert client.get("/generate_204", headers=probe).status_code == 302  # the copy is made
    guest = make_guest("10.77.0.31", "02:cc:00:00:00:31")  # joins after it
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    time.sleep(0.15)
    answer = guest.client.get("/generate_204", headers=probe)
    assert (answer.status_code, answer.data) == (204, b"")
