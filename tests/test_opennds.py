"""callpass as the FAS of a real openNDS 9.10 (Debian `opennds`) on a namespaced gateway, with
`[gateway] firewall = "opennds"` driving it through ndsctl.

The gateway runs dnsmasq (DHCP for the LAN), openNDS and `callpass serve`; the guests take DHCP
leases with busybox udhcpc; upstream runs the SMSC simulator (on the provider's address) and a
stand-in internet server. See tests/opennds_support.py for how openNDS is contained (nothing of
the host's /etc or firewall changes; the module checks /etc at the end).

Guest 1's probe is redirected by openNDS to callpass with `fas=`, it posts a phone, the simulator
calls, and guest 1 reaches the internet without its browser doing anything more; its still open
wait page then sends it through openNDS's /opennds_auth/. Guest 2 never gets through; a forged
fas naming guest 1, sent from guest 2, opens nothing for guest 1; ending guest 1's session cuts it
off. The expensive gateway is shared by the module's tests, each of which leaves nobody online.
"""

import base64
import hashlib
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from conftest import wait_until
from netns import Topology, requirements_missing
from opennds_support import GATEWAY_PORT, OpenNDSGateway, opennds_missing
from serve_support import SECRET, TOKEN, write_config
from sqlalchemy import select

from portal import opennds, sessions, storage
from portal.storage import access_session, verification

ROOT = Path(__file__).resolve().parent.parent
PORTAL_PORT = 8080
SIM_PORT = 8081
FASKEY = "k0" * 16
SESSION_MINUTES = 30
INTERNET_BODY = "the internet"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, servers):
    """The topology with openNDS, `callpass serve` (firewall "opennds") and the simulator."""
    reason = requirements_missing() or opennds_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("opennds")
    etc_before = etc_state()
    with Topology() as topo:
        nds = OpenNDSGateway(topo, folder / "opennds", fasport=PORTAL_PORT, faskey=FASKEY)
        try:
            nds.start()
            for guest in ("guest1", "guest2"):
                assert nds.lease(guest), nds.dnsmasq_log_path.read_text()
            database = servers.new_database(folder)
            config = write_config(
                folder / "callpass.toml", port=PORTAL_PORT, database=database,
                provider_url=f"http://{topo.provider_ip}:{SIM_PORT}", listen_host="0.0.0.0",
                public_host=topo.gateway.ip, firewall="opennds", sections={
                    "portal": {"session_minutes": SESSION_MINUTES},
                    "opennds": {"faskey": FASKEY, "ndsctl": " ".join(nds.ndsctl_prefix())}})
            log_path = folder / "serve.log"
            with log_path.open("w") as log:
                topo.popen("upstream", sys.executable, "-m", "portal", "simulator",
                           "--host", topo.provider_ip, "--port", str(SIM_PORT), "--callback-url",
                           f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}/callback/smsc/{TOKEN}",
                           "--secret", SECRET, "--login", "venue", "--password", "venue-password",
                           stdout=log, stderr=log, cwd=ROOT)
                topo.popen("gateway", sys.executable, "-m", "portal", "serve",
                           "--config", str(config), stdout=log, stderr=log, cwd=ROOT)
            topo.portal = f"http://{topo.gateway.ip}:{PORTAL_PORT}"
            topo.nds = nds
            topo.log_path = log_path
            topo.engine = storage.connect(database)
            assert wait_until(lambda: curl(topo, "gateway", f"{topo.portal}/healthz")[0] == 0,
                              seconds=20), \
                log_path.read_text()
            with topo.http_server("upstream", 80, body=INTERNET_BODY, ip=topo.upstream.ip):
                yield topo
            topo.engine.dispose()
        finally:
            nds.close()
    assert etc_state() == etc_before, "openNDS changed the host's /etc"


def etc_state():
    """What openNDS would write on a generic Linux host: /etc/hosts and /etc/dnsmasq.conf."""
    return {name: Path("/etc", name).read_bytes() if Path("/etc", name).exists() else None
            for name in ("hosts", "dnsmasq.conf")}


def curl(topo, host, *args, timeout=4):
    """Run curl in host's namespace (pages in English); returns (exit code, stdout)."""
    done = topo.run(host, "curl", "-s", "--max-time", str(timeout), "-H", "Accept-Language: en",
                    *args, timeout=timeout + 5)
    return done.returncode, done.stdout



def location(headers):
    return next((line.split(":", 1)[1].strip() for line in headers.splitlines()
                 if line.lower().startswith("location:")), "")


def probe(topo, guest):
    """Where openNDS sends guest's browsing (its redirect's Location), or "" when it reaches
    the internet (or nothing)."""
    code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null",
                         f"http://{topo.upstream.ip}/news?page=1")
    return location(headers) if code == 0 else ""


def reaches_internet(topo, guest):
    return curl(topo, guest, f"http://{topo.upstream.ip}/") == (0, INTERNET_BODY)


def is_captive(topo, guest):
    """guest's web goes to callpass with fas= (from openNDS), never to the internet."""
    return probe(topo, guest).startswith(f"{topo.portal}/?fas=") and \
        not reaches_internet(topo, guest)


def fas_fields(url):
    """The values openNDS put in a redirect's fas parameter (decoded here independently)."""
    fas = parse_qs(urlsplit(url).query)["fas"][0]
    pairs = base64.b64decode(fas).decode().split(", ")
    return {key: unquote(value) for key, _, value in (p.partition("=") for p in pairs) if value}


def authenticated(topo):
    """MACs openNDS lets through (from `ndsctl json`)."""
    clients = json.loads(topo.nds.ndsctl("json").stdout or "{}").get("clients", {})
    return {mac for mac, entry in clients.items() if entry["state"] == "Authenticated"}


def post_phone(topo, guest, phone, jar):
    """guest posts the phone form with its cookie jar; returns the verification token."""
    code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null", "-b", str(jar), "-c", str(jar),
                         "--data-urlencode", f"phone={phone}", f"{topo.portal}/")
    assert code == 0 and " 303" in headers.splitlines()[0], headers
    return location(headers).rsplit("/", 1)[-1]


def place_call(topo, phone):
    code, answer = curl(topo, "upstream", "--data", "phone=" + phone.lstrip("+"),
                        f"http://{topo.provider_ip}:{SIM_PORT}/sim/call", timeout=15)
    assert code == 0 and json.loads(answer)["status"] == 200, answer


def end_sessions(topo, mac):
    """End mac's open sessions as the admin page does; the serve's worker revokes them."""
    with topo.engine.connect() as conn:
        ids = conn.execute(select(access_session.c.id).where(access_session.c.mac == mac,
                                                             access_session.c.ended_at.is_(None))
                           ).scalars().all()
    for session_id in ids:
        assert sessions.end_session(topo.engine, session_id, "admin")


def test_guest_gets_online_through_opennds_without_doing_anything_more(gw, tmp_path):
    # Both guests are captive: openNDS sends their web to callpass with fas=.
    for guest in ("guest1", "guest2"):
        assert is_captive(gw, guest), gw.log_path.read_text()
    redirect = probe(gw, "guest1")
    fields = fas_fields(redirect)
    assert fields["clientmac"] == gw.guest1.mac and fields["clientip"] == gw.guest1.ip
    assert fields["originurl"] == f"http://{gw.upstream.ip}/news?page=1"

    # Guest 1's sign-in sheet opens the redirect, posts a phone; the simulator places the call.
    jar = tmp_path / "guest1.cookies"
    code, page = curl(gw, "guest1", "-b", str(jar), "-c", str(jar), redirect)
    assert code == 0 and 'name="phone"' in page
    token = post_phone(gw, "guest1", "+79161234567", jar)
    place_call(gw, "+79161234567")

    # Guest 1 is online without its browser doing anything more: the backend's ndsctl auth.
    assert wait_until(lambda: reaches_internet(gw, "guest1"), seconds=15), gw.log_path.read_text()
    assert authenticated(gw) == {gw.guest1.mac}
    entry = json.loads(gw.nds.ndsctl("json", gw.guest1.mac).stdout)
    assert -10 <= int(entry["session_end"]) - time.time() - SESSION_MINUTES * 60 <= 60
    assert is_captive(gw, "guest2")

    # The wait page, still open, sends the browser through openNDS's /opennds_auth/ with the
    # tok openNDS expects; openNDS (9.10: the client is authenticated already) hands it back to
    # callpass, which offers the page the guest first opened.
    status = json.loads(curl(gw, "guest1", "-b", str(jar),
                             f"{gw.portal}/api/verifications/{token}")[1])
    assert status["access"] == "online"
    code, page = curl(gw, "guest1", "-b", str(jar), f"{gw.portal}/wait/{token}")
    tok = hashlib.sha256((fields["hid"] + FASKEY).encode()).hexdigest()
    next_url = (f"http://{gw.gateway.ip}:{GATEWAY_PORT}/opennds_auth/?tok={tok}"
                "&amp;redir=http%3A%2F%2F10.78.0.2%2Fnews%3Fpage%3D1")
    assert f'content="1;url={next_url}"' in page and FASKEY not in page
    code, page = curl(gw, "guest1", "-L", "-b", str(jar), next_url.replace("&amp;", "&"))
    assert code == 0 and "You are online" in page
    assert f'href="http://{gw.upstream.ip}/news?page=1"' in page

    # Ended from the admin side: the worker deauthenticates guest 1 at once.
    end_sessions(gw, gw.guest1.mac)
    assert wait_until(lambda: not reaches_internet(gw, "guest1"), seconds=10)
    assert is_captive(gw, "guest1") and is_captive(gw, "guest2")
    assert authenticated(gw) == set()


def test_a_forged_fas_naming_guest1_sent_from_guest2_opens_nothing_for_guest1(gw, tmp_path):
    assert is_captive(gw, "guest1") and is_captive(gw, "guest2")
    own = fas_fields(probe(gw, "guest2"))
    # Guest 2 writes a fas of its own naming guest 1 (level 1 is unsigned: anyone can).
    forged = {**own, "clientmac": gw.guest1.mac, "clientip": gw.guest1.ip}
    fas = base64.b64encode(", ".join(f"{k}={v}" for k, v in forged.items()).encode()).decode()
    jar = tmp_path / "guest2.cookies"
    code, page = curl(gw, "guest2", "-b", str(jar), "-c", str(jar), "-G",
                      "--data-urlencode", f"fas={fas}", f"{gw.portal}/")
    assert code == 0 and 'name="phone"' in page  # the normal form
    assert "ignored a fas parameter" in gw.log_path.read_text()

    token = post_phone(gw, "guest2", "+79161112233", jar)
    with gw.engine.connect() as conn:
        row = conn.execute(select(verification).where(verification.c.token == token)).one()
    assert (row.mac, row.ip) == (gw.guest2.mac, gw.guest2.ip)  # the neighbour table's, not fas's
    assert authenticated(gw) == set()
    assert is_captive(gw, "guest1") and is_captive(gw, "guest2")

    # Even once the call comes, only the caller's own device is let through, never guest 1,
    # and its wait page does not send it anywhere with the forged values.
    place_call(gw, "+79161112233")
    assert wait_until(lambda: reaches_internet(gw, "guest2"), seconds=15), gw.log_path.read_text()
    assert authenticated(gw) == {gw.guest2.mac}
    assert is_captive(gw, "guest1")
    code, page = curl(gw, "guest2", "-b", str(jar), f"{gw.portal}/wait/{token}")
    assert code == 0 and "You are online" in page and "opennds_auth" not in page

    end_sessions(gw, gw.guest2.mac)
    assert wait_until(lambda: not reaches_internet(gw, "guest2"), seconds=10)
    assert authenticated(gw) == set()


def test_opennds_accepts_the_tok_callpass_computes(gw):
    # For a browser openNDS has not let through yet (here guest 2, which never called),
    # /opennds_auth/ with callpass's tok authenticates it and sends it to its original page:
    # the tok is right, so the guest is never bounced back to the portal in a loop.
    fields = fas_fields(probe(gw, "guest2"))
    fas = {"hid": fields["hid"], "gateway": fields["gatewayaddress"],
           "origin": fields["originurl"]}
    code, headers = curl(gw, "guest2", "-D", "-", "-o", "/dev/null", opennds.auth_url(fas, FASKEY))
    assert code == 0 and location(headers) == f"http://{gw.upstream.ip}/news?page=1"
    assert authenticated(gw) == {gw.guest2.mac}
    # Not callpass's session: the backend's comparison with the database would revoke it
    # within a minute; the test cleans up at once.
    assert gw.nds.ndsctl("deauth", gw.guest2.mac).returncode == 0
    assert is_captive(gw, "guest2")
