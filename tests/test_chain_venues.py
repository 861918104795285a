"""A chain as it runs for real: 20 venues (MikroTik hotspots, each named by its identity), two
`callpass serve` nodes on one PostgreSQL and one Redis behind the example HAProxy, real FreeRADIUS
(radclient standing in for the routers) asking callpass through the same HAProxy, and the
simulator's notifications landing on node B. 200 guests sign in in a burst while node A is
killed with -9 half-way: every confirmed call has exactly one session in its own venue, each
router lets in only its own venue's guests, and a venue's admin sees only that venue."""

import csv
import io
import itertools
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from chain_support import start_haproxy
from radius_support import FreeRadius, free_udp_port, radclient
from radius_support import SECRET as RADIUS_SECRET
from serve_support import ServeProcess, free_port, provider_for, stop_process, write_config
from sqlalchemy import func, select

from portal import auth, storage, venues
from portal.storage import access_session, notification, verification

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None or shutil.which("freeradius") is None,
    reason="needs haproxy and freeradius (deploy/install-system-packages --tests)")

RADIUS_TOKEN = "chain-radius-token-0123456789"
ADMIN_PASSWORD = "correct horse battery"
VENUES = [f"v{n:02d}" for n in range(1, 21)]
GUESTS = [(f"02:ce:00:00:{n // 256:02x}:{n % 256:02x}", f"+7916700{n:04d}", VENUES[n % 20])
          for n in range(200)]


class Chain:
    """Two nodes (RADIUS backend) on one PostgreSQL and Redis, HAProxy in front, FreeRADIUS
    asking through HAProxy, the simulator notifying node B."""

    def __init__(self, folder, database, redis_url):
        self.database = database
        self.ports = [free_port(), free_port()]
        self.balancer_port = free_port()
        self.url = f"http://127.0.0.1:{self.balancer_port}"
        self.simulator = provider_for(self.ports[1])
        sections = {
            "portal": {"ratelimit_storage": redis_url, "trusted_proxy": "127.0.0.1",
                       "limit_per_device": "3 per minute", "session_minutes": 60},
            "radius": {"token": RADIUS_TOKEN, "clients": ["127.0.0.1/32"],
                       "secret": RADIUS_SECRET, "coa_port": free_udp_port()}}
        self.nodes = []
        for name, port in zip("ab", self.ports):
            config = write_config(folder / f"{name}.toml", port=port, database=database,
                                  provider_url=self.simulator.url, firewall="radius",
                                  sections=sections)
            self.nodes.append(ServeProcess(config, folder / f"{name}.log").start(port))
        self.balancer = start_haproxy(folder, self.balancer_port, self.ports)
        self.radius = FreeRadius(folder / "freeradius", self.url, RADIUS_TOKEN).start()

    def stop(self):
        self.radius.stop()
        stop_process(self.balancer)
        for node in self.nodes:
            node.stop()
        self.simulator.stop()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, postgresql, redis_server):
    folder = tmp_path_factory.mktemp("chain")
    database = postgresql.new_database()
    engine = storage.connect(database)
    storage.upgrade(engine)
    for slug in VENUES:
        venues.save(engine, {"slug": slug, "name": f"Cafe {slug}", "nas_identifier": f"MT-{slug}",
                             "nas_ip": None, "unifi_site": None})
    auth.add_admin(engine, "boss", ADMIN_PASSWORD)
    auth.add_admin(engine, "v03-staff", ADMIN_PASSWORD, venues.by_slug(engine, "v03").id)
    chain = Chain(folder, database, redis_server.url())
    chain.engine = engine
    yield chain
    chain.stop()
    engine.dispose()


def with_retries(send, tries=4):
    """A guest tries again when a node died under its request (HAProxy answers 502/503)."""
    for attempt in range(tries):
        try:
            answer = send()
            if answer.status_code < 500:
                return answer
        except requests.RequestException:
            pass
        time.sleep(0.5 * (attempt + 1))
    return send()


def sign_in_by_call(chain, mac, phone, slug):
    """One guest of venue slug: the hotspot's login page sends it to callpass, it types its
    phone and calls. Returns the wait page's token."""
    browser = requests.Session()
    arrived = with_retries(lambda: browser.post(chain.url + "/mikrotik", allow_redirects=False,
                                                timeout=30, data={
        "mac": mac.upper(), "ip": "10.5.50.10", "link-login-only": "http://10.5.50.1/login",
        "link-orig": "", "chap-id": "", "chap-challenge": "", "identity": f"MT-{slug}"}))
    assert arrived.status_code == 303, arrived.text
    form = with_retries(lambda: browser.post(chain.url + "/", data={"phone": phone},
                                             allow_redirects=False, timeout=30))
    assert form.status_code == 303, (mac, form.status_code, form.text[:300])
    called = requests.post(chain.simulator.url + "/sim/call", data={"phone": phone.lstrip("+")},
                           timeout=30).json()
    assert called["status"] == 200, called
    return form.headers["Location"].rsplit("/", 1)[-1]


def test_a_burst_across_20_venues_with_a_node_killed_loses_nothing_and_keeps_venues_apart(chain):
    done = itertools.count(1)
    killed = threading.Event()

    def guest(entry):
        token = sign_in_by_call(chain, *entry)
        if next(done) == len(GUESTS) // 2 and not killed.is_set():
            killed.set()
            chain.nodes[0].kill()  # kill -9 of node A in the middle of the burst
        return token

    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = list(pool.map(guest, GUESTS))
    assert killed.is_set() and len(set(tokens)) == len(GUESTS)

    venue_ids = venues.slugs(chain.engine)
    slug_of = {mac: slug for mac, _phone, slug in GUESTS}
    with chain.engine.connect() as conn:
        confirmed = conn.execute(select(verification.c.id).where(
            verification.c.state == "confirmed")).scalars().all()
        rows = conn.execute(select(access_session.c.verification_id, access_session.c.mac,
                                   access_session.c.venue_id)).all()
        accepted = conn.execute(select(func.count()).where(
            notification.c.verdict == "accepted")).scalar()
    assert len(confirmed) == len(GUESTS) == accepted
    assert sorted(row.verification_id for row in rows) == sorted(confirmed)  # one session each
    assert {row.mac: venue_ids[row.venue_id] for row in rows} == slug_of

    # The routers ask FreeRADIUS, which asks callpass through HAProxy (node B alone now): each
    # lets in its own venue's guests and nobody else's.
    for mac, _phone, slug in GUESTS[:40]:
        other = VENUES[(VENUES.index(slug) + 1) % 20]
        login = {"User-Name": mac.upper(), "User-Password": "", "Calling-Station-Id": mac.upper(),
                 "Service-Type": "Login-User"}
        code, reply = radclient(chain.radius.auth_port, "auth", RADIUS_SECRET,
                                {**login, "NAS-Identifier": f"MT-{slug}"})
        assert code == "Access-Accept", (mac, slug, reply, chain.radius.log()[-2000:])
        assert 3500 < int(reply["Session-Timeout"]) <= 3600
        code, reply = radclient(chain.radius.auth_port, "auth", RADIUS_SECRET,
                                {**login, "NAS-Identifier": f"MT-{other}"})
        assert code == "Access-Reject" and "Session-Timeout" not in reply, (mac, other)

    # Limits count across nodes: node B alone is left, so ask it and the balancer alike.
    browser = requests.Session()
    browser.post(chain.url + "/mikrotik", allow_redirects=False, timeout=30, data={
        "mac": "02:CE:00:00:FF:FF", "ip": "10.5.50.11", "link-login-only": "http://10.5.50.1/login",
        "identity": "MT-v01"})
    statuses = [browser.post(chain.url + "/", data={"phone": f"+7916711000{n}"},
                             allow_redirects=False, timeout=30).status_code for n in range(4)]
    assert statuses == [303, 303, 303, 429]

    # The admin of v03 sees v03's ten guests and nobody else's; the chain's admin sees all 200.
    staff = signed_in(chain, "v03-staff")
    listing = staff.get(chain.url + "/admin/sessions", timeout=30).text
    shown = {mac for mac, *_rest in GUESTS if mac in listing}
    assert shown == {mac for mac, _phone, slug in GUESTS if slug == "v03"} and len(shown) == 10
    rows = exported(staff, chain)
    assert len(rows) == 11 and {row[1] for row in rows[1:]} == shown
    boss_rows = exported(signed_in(chain, "boss"), chain)
    assert len(boss_rows) == len(GUESTS) + 1 and len(boss_rows[0]) == len(rows[0]) + 1
    assert {(row[1], row[-1]) for row in boss_rows[1:]} == set(slug_of.items())


def signed_in(chain, name):
    browser = requests.Session()
    page = browser.get(chain.url + "/admin/login", timeout=30).text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = browser.post(chain.url + "/admin/login", timeout=30, data={
        "name": name, "password": ADMIN_PASSWORD, "csrf_token": csrf})
    assert answer.ok and "/admin/login" not in answer.url, answer.text[:300]
    return browser


def exported(browser, chain):
    answer = browser.get(chain.url + "/admin/log.csv", timeout=60)
    assert answer.status_code == 200
    return list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
