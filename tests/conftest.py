"""Shared fixtures: a fresh app per test, the real SMSC simulator over HTTP, a recording firewall,
and a `guest` helper so tests read like the story they check."""

import os
import time
from datetime import timedelta

import pytest
from serve_support import arp_line, write_arp
from sqlalchemy import select

from portal import config as config_module
from portal import create_app, sessions, storage
from portal.firewall import NoopFirewall
from portal.simulator import SimulatorServer

pytest_plugins = ["browser", "databases"]  # their fixtures (browser, phone_page, database_url…)

CALLBACK_TOKEN = "test-callback-token-0123456789"
CALLBACK_SECRET = "test-checksum-secret"
GUEST_IP = "10.77.0.11"
GUEST_MAC = "02:cc:00:00:00:11"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a missing tool is a failure, not a skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run everything: {report.longrepr}"


@pytest.fixture
def firewall():
    """A no-op firewall that records every call (`firewall.calls`)."""
    return NoopFirewall()


@pytest.fixture
def simulator(tmp_path):
    """The real SMSC simulator on a free loopback port; notifications go to `simulator.callback_url`
    which tests point at the app under test (see `live_portal`)."""
    server = SimulatorServer(callback_url="http://127.0.0.1:9/unset", secret=CALLBACK_SECRET,
                             signature="md5").start()
    yield server
    server.stop()


@pytest.fixture
def neighbour_table(tmp_path):
    """A file in /proc/net/arp format the app reads MACs from; tests add lines to it."""
    return write_arp(tmp_path / "arp", {})


def add_neighbour(path, ip, mac, device="br-lan"):
    """Add a line to the neighbour table file."""
    with open(path, "a") as fh:
        fh.write(arp_line(ip, mac, device))


@pytest.fixture
def cfg(database_url, simulator, neighbour_table):
    """A complete, safe config pointing at the simulator and a fresh database."""
    return config_module.load(None, environ={}, overrides={
        "portal": {"public_url": "http://localhost/", "secret_key": "s" * 32,
                   "database": database_url,
                   "neighbour_table": str(neighbour_table)},
        "provider": {"base_url": simulator.url, "fallback_urls": [], "login": "venue",
                     "password": "pw", "timeout_seconds": 3},
        "callback": {"token": CALLBACK_TOKEN, "signature": "md5", "secret": CALLBACK_SECRET},
        "gateway": {"firewall": "noop"},
        "venue": {"default_language": "en"},
    })


@pytest.fixture
def app(cfg, firewall):
    app = create_app(cfg, firewall=firewall)
    storage.upgrade(app.extensions["callpass"].engine)
    yield app
    app.extensions["callpass"].engine.dispose()


@pytest.fixture
def configured_app(cfg):
    """The app with the backend cfg names (`gateway.firewall`), not the recording firewall; for
    modules that test a backend: `app = configured_app` in a module fixture."""
    app = create_app(cfg)
    storage.upgrade(app.extensions["callpass"].engine)
    yield app
    app.extensions["callpass"].firewall_worker.stop()
    app.extensions["callpass"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class Guest:
    """A device on the guest LAN, driving the portal through the Flask test client."""

    def __init__(self, app, neighbour_table, ip=GUEST_IP, mac=GUEST_MAC):
        self.app, self.ip, self.mac = app, ip, mac
        self.client = app.test_client()
        self.client.environ_base.update(REMOTE_ADDR=ip)
        if mac:
            add_neighbour(neighbour_table, ip, mac)
        self.token = None

    def start(self, phone, **form):
        """Submit the phone form; remember the verification token on success. A remembered
        device's session is handed to the firewall worker at once."""
        response = self.client.post("/", data={"phone": phone, **form})
        if response.status_code == 303:
            self.token = response.headers["Location"].rsplit("/", 1)[-1]
        settle(self.app)
        return response

    def status(self):
        return self.client.get(f"/api/verifications/{self.token}").get_json()

    def call(self, phone_digits, **kw):
        """Deliver a genuine, fresh notification for phone_digits, as the provider would; then let
        the firewall worker apply what changed. `ts=` sets the call's time."""
        response = notify(self.client, phone_digits, **kw)
        settle(self.app)
        return response


def settle(app):
    """Do what the firewall worker of `serve` does right after a change: apply the queue."""
    app.extensions["callpass"].firewall_worker.apply_pending()


def open_session(app, mac, ip, phone, minutes, **kw):
    """Open an access session directly (as a confirmed call would) and apply it; returns its id."""
    svc = app.extensions["callpass"]
    with storage.begin(svc.engine) as conn:
        session_id = sessions.grant_access(conn, mac, ip, phone, minutes, **kw)
    settle(app)
    return session_id


def close_window(app, token):
    """Let a verification's window run out (as if its five minutes had passed, uncalled, a
    minute and a half ago: a call now is past the window's clock slack)."""
    v = storage.verification
    with storage.begin(app.extensions["callpass"].engine) as conn:
        row = conn.execute(select(v).where(v.c.token == token)).one()
        shift = row.expires_at - row.created_at + timedelta(seconds=90)
        conn.execute(v.update().where(v.c.token == token).values(
            created_at=row.created_at - shift, expires_at=row.expires_at - shift))


def signed_fields(phone_digits, ts=None, secret=CALLBACK_SECRET):
    import hashlib

    ts = int(time.time()) if ts is None else ts
    return {"waitcall": "1", "phone": phone_digits, "ts": str(ts),
            "md5": hashlib.md5(f"{phone_digits}:{ts}:{secret}".encode()).hexdigest()}


def notify(client, phone_digits, token=CALLBACK_TOKEN, **kw):
    return client.post(f"/callback/smsc/{token}", data=signed_fields(phone_digits, **kw))


@pytest.fixture
def guest(app, neighbour_table):
    return Guest(app, neighbour_table)


@pytest.fixture
def make_guest(app, neighbour_table):
    return lambda ip, mac: Guest(app, neighbour_table, ip=ip, mac=mac)


def wait_until(predicate, seconds=10.0, interval=0.1):
    """Poll predicate until true or seconds pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def live_portal(app, simulator, neighbour_table):
    """The app on a real HTTP server on loopback, with the simulator notifying it."""
    import threading
    from types import SimpleNamespace

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    worker = app.extensions["callpass"].firewall_worker.start()
    url = f"http://127.0.0.1:{server.server_port}"
    simulator.callback_url = f"{url}/callback/smsc/{CALLBACK_TOKEN}"
    yield SimpleNamespace(url=url, guest=Guest(app, neighbour_table))
    worker.stop()
    server.shutdown()
    thread.join(5)
    server.server_close()
