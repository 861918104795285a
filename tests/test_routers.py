"""Guests sent by a router that keeps them: MikroTik Hotspot (login.html → /mikrotik, then the
post-call login at the router with an http-chap password) and UniFi's external portal
(/guest/s/<site>/?id=…). The pages are driven in real Chromium against a stand-in router page
that records what the browser posts; the RADIUS check of that password by real FreeRADIUS is in
tests/test_radius_freeradius.py."""

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import CALLBACK_TOKEN, notify, settle

from portal import create_app, radius, storage
from portal.routers import decode_chap

ROOT = Path(__file__).resolve().parent.parent
LOGIN_HTML = ROOT / "deploy" / "mikrotik" / "login.html"
ROUTER_MAC = "02:00:00:00:00:10"
ROUTER_IP = "10.5.50.10"
CHAP_ID = b"\x8a"
CHALLENGE = bytes(range(0xF0, 0x100))


def octal(data):
    """How RouterOS writes $(chap-id) and $(chap-challenge): octal escapes."""
    return "".join(f"\\{byte:03o}" for byte in data)


def mikrotik_vars(login_url="http://10.5.50.1/login"):
    return {"mac": ROUTER_MAC.upper(), "ip": ROUTER_IP, "link-login-only": login_url,
            "link-orig": "http://example.com/news", "chap-id": octal(CHAP_ID),
            "chap-challenge": octal(CHALLENGE)}


@pytest.fixture
def cfg(cfg):
    cfg["gateway"]["firewall"] = "radius"
    cfg["radius"].update(token="radius-token-0123456789")
    return cfg


@pytest.fixture
def app(configured_app):
    return configured_app


def token_of(started):
    """The verification token from the form's redirect to /wait/<token>?continue=…"""
    return urlsplit(started.headers["Location"]).path.rsplit("/", 1)[-1]


def expected_password(app, session_id):
    otp = radius.login_password(app.extensions["callpass"].config["portal"]["secret_key"],
                                session_id)
    return hashlib.md5(CHAP_ID + otp.encode() + CHALLENGE).hexdigest()


def test_chap_values_are_read_as_routeros_writes_them():
    assert decode_chap(octal(b"\x00\x7f\xff")) == b"\x00\x7f\xff"
    assert decode_chap("ab\\101") == b"abA"
    assert decode_chap("") == b""
    for bad in ("\\9", "\\", "é" * 1 + "\u0100"):
        with pytest.raises(ValueError):
            decode_chap(bad)


def test_a_mikrotik_guest_verifies_and_gets_the_routers_login_form(app):
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR="203.0.113.5")  # the router's NAT: no neighbour entry
    assert browser.post("/mikrotik", data=mikrotik_vars()).status_code == 303
    started = browser.post("/", data={"phone": "+79161234567"})
    assert started.status_code == 303
    token = token_of(started)
    notify(browser, "79161234567")
    settle(app)

    page = browser.get(f"/wait/{token}")
    html = page.get_data(as_text=True)
    assert 'id="router-login"' in html and 'action="http://10.5.50.1/login"' in html
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', html))
    with app.extensions["callpass"].engine.connect() as conn:
        session = conn.execute(storage.access_session.select()).one()
    assert session.mac == ROUTER_MAC and session.ip == ROUTER_IP
    assert fields == {"username": ROUTER_MAC, "password": expected_password(app, session.id),
                      "dst": "http://example.com/news", "popup": "false"}
    # The page may post to the router, and nowhere else.
    assert "form-action 'self' http://10.5.50.1;" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("change", [{"link-login-only": "javascript:alert(1)"},
                                    {"mac": "not-a-mac"}, {"ip": "10.5.50"},
                                    {"chap-challenge": "\\9zz\\"}])
def test_unusable_router_variables_are_ignored(app, change):
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR="203.0.113.5")
    browser.post("/mikrotik", data=mikrotik_vars() | change)
    assert browser.post("/", data={"phone": "+79161234567"}).status_code == 403  # not identified


def test_naming_a_device_online_under_another_number_ends_nothing(app):
    """The router's variables come back from the guest's browser, so a guest can name another
    device's MAC. That device's session (another number) is neither ended nor moved to the
    guest's number in the log: the form says the device is online already."""
    from portal import sessions

    engine = app.extensions["callpass"].engine
    victim = app.test_client()
    victim.post("/mikrotik", data=mikrotik_vars())
    assert victim.post("/", data={"phone": "+79160000001"}).status_code == 303
    assert notify(victim, "79160000001").data == b"OK"
    settle(app)
    session = sessions.active_session(engine, ROUTER_MAC)
    assert session is not None and session.phone == "+79160000001"

    forger = app.test_client()
    forger.post("/mikrotik", data=mikrotik_vars())  # the victim's MAC, typed by someone else
    answer = forger.post("/", data={"phone": "+79169999999"})
    assert answer.status_code == 409
    assert "already online with another number" in answer.get_data(as_text=True)
    assert sessions.active_session(engine, ROUTER_MAC).id == session.id
    # The same number again (its own device coming back) is not refused.
    assert victim.post("/", data={"phone": "+79160000001"}).status_code == 303


def test_router_variables_mean_nothing_when_the_gateway_is_callpass_own(app, cfg):
    cfg["gateway"]["firewall"] = "noop"
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR="203.0.113.5")
    browser.post("/mikrotik", data=mikrotik_vars())
    assert browser.post("/", data={"phone": "+79161234567"}).status_code == 403


def test_a_unifi_guest_is_authorised_on_the_controller_after_the_call(cfg):
    from unifi_standin import StandInController

    controller = StandInController().start()
    cfg["gateway"]["firewall"] = "unifi"
    cfg["unifi"].update(url=controller.url, username="callpass", password="unifi-password")
    app = create_app(cfg)
    storage.upgrade(app.extensions["callpass"].engine)
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR="203.0.113.5")
    arrival = browser.get("/guest/s/default/?id=02:00:00:00:00:20&ap=aa:bb:cc:dd:ee:ff&t=1700000000"
                          "&url=http%3A%2F%2Fexample.com%2F&ssid=Cafe")
    assert arrival.status_code == 303
    started = browser.post("/", data={"phone": "+79161234567"})
    token = token_of(started)
    notify(browser, "79161234567")
    settle(app)
    assert controller.commands[0]["mac"] == "02:00:00:00:00:20"
    assert 'href="http://example.com/"' in browser.get(f"/wait/{token}").get_data(as_text=True)
    controller.stop()
    app.extensions["callpass"].engine.dispose()


class StandInHotspot:
    """A MikroTik hotspot's two pages, as far as a browser sees them: login.html with the
    router's variables filled in, and link-login-only, which records what the browser posts."""

    def __init__(self, portal_url):
        page = LOGIN_HTML.read_text().replace("https://portal.example.net/mikrotik",
                                              portal_url + "/mikrotik")
        self.posts = []
        hotspot = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                values = mikrotik_vars(login_url=hotspot.url + "/login")
                text = page
                for name, value in values.items():
                    text = text.replace(f"$({name})", value.replace("\\", "\\"))
                text = re.sub(r"\$\(if error\).*?\$\(endif\)", "", text)
                self._answer(text)

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                hotspot.posts.append({k: v[0] for k, v in
                                      parse_qs(self.rfile.read(length).decode()).items()})
                self._answer("<p id=logged-in>You are logged in</p>")

            def _answer(self, text):
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_mikrotik_pages_in_a_browser(cfg, simulator, phone_page):
    """login.html → callpass → the call → the browser logs in at the router by itself."""
    from serve_support import free_port
    from werkzeug.serving import make_server

    port = free_port()
    portal = f"http://127.0.0.1:{port}"
    cfg["portal"]["public_url"] = portal + "/"
    app = create_app(cfg)
    storage.upgrade(app.extensions["callpass"].engine)
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    simulator.callback_url = f"{portal}/callback/smsc/{CALLBACK_TOKEN}"
    app.extensions["callpass"].firewall_worker.start()
    hotspot = StandInHotspot(portal)
    try:
        phone_page.goto(hotspot.url + "/login.html")
        phone_page.wait_for_url(portal + "/")
        phone_page.fill("input[name=phone]", "+7 916 123-45-67")
        phone_page.click("button[type=submit]")
        phone_page.wait_for_url(re.compile(r".*/wait/"))
        import requests
        requests.post(simulator.url + "/sim/call", data={"phone": "79161234567"}, timeout=10)
        phone_page.wait_for_selector("#logged-in", timeout=15000)
        [posted] = hotspot.posts
        with app.extensions["callpass"].engine.connect() as conn:
            session = conn.execute(storage.access_session.select()).one()
        assert posted == {"username": ROUTER_MAC, "password": expected_password(app, session.id),
                          "dst": "http://example.com/news", "popup": "false"}
    finally:
        hotspot.stop()
        server.shutdown()
        server.server_close()
        app.extensions["callpass"].firewall_worker.stop()
        app.extensions["callpass"].engine.dispose()
