"""An openNDS gateway as a venue of a chain, for real: openNDS 9.10 (Debian `opennds`) at level 3
on a namespaced gateway, driven by the shipped deploy/opennds/opennds-venue.conf, with its own
authmon and PHP; callpass elsewhere (the upstream namespace) behind HAProxy with TLS, as the
chain's central site would run it (deploy/central/haproxy.cfg with an HTTPS bind).

The venue is added with `callpass venue add --opennds-gateway … --faskey -`. Guest 1's browsing
is sent to `https://portal.test/opennds/cafe/?fas=…&iv=…`; it types a phone, the simulator calls,
and openNDS's authmon, asking callpass every 10 s, lets guest 1 in and says so, after which the
guest is shown online. Guest 2 stays captive. When the gateway forgets guest 1 (a reboot), guest 1
is sent to callpass again and let in again, for the rest of the same session. See
tests/opennds_support.py for how openNDS is contained (its /etc/hosts names portal.test, and its
PHP trusts only the test's CA).
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from conftest import wait_until
from netns import Topology, requirements_missing
from opennds_support import GATEWAY_PORT, OpenNDSGateway, opennds_missing, shipped_conf
from serve_support import SECRET, TOKEN, write_config
from sqlalchemy import select

from portal import opennds_remote, storage
from portal.storage import venue, verification

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "opennds" / "opennds-venue.conf"
HAPROXY_EXAMPLE = ROOT / "deploy" / "central" / "haproxy.cfg"
NODE_PORT = 8080
SIM_PORT = 8081
HOST = "portal.test"
GATEWAY_NAME = "cafe-7f3k2q"
FASKEY = hashlib.sha256(b"the test's faskey").hexdigest()  # 64 characters, as openssl makes
PHONE = "+79161234567"
SESSION_MINUTES = 30
INTERNET_BODY = "the internet"


def missing():
    for tool in ("php", "haproxy", "openssl"):
        if shutil.which(tool) is None:
            return f"needs {tool} (deploy/install-system-packages --tests installs it)"
    return requirements_missing() or opennds_missing()


def venue_conf(topo):
    """deploy/opennds/opennds-venue.conf with the test's addresses and names."""
    return shipped_conf(SHIPPED, {
        "GatewayInterface": topo.lan_iface, "GatewayName": GATEWAY_NAME, "fasremotefqdn": HOST,
        "fasremoteip": topo.upstream.ip, "fasport": "443", "faspath": "/opennds/cafe/",
        "faskey": FASKEY, "gatewayport": str(GATEWAY_PORT)})


def make_certificate(folder):
    """A self-signed certificate for portal.test: (cert, cert + key for HAProxy)."""
    cert, key, pem = folder / "cert.pem", folder / "key.pem", folder / "haproxy.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, pem


def haproxy_conf(topo, pem):
    """The example HAProxy config, TLS on the upstream address, one node behind it."""
    config = HAPROXY_EXAMPLE.read_text().replace(
        "    bind :80\n", f"    bind {topo.upstream.ip}:443 ssl crt {pem}\n")
    return re.sub(r"(    server node\d .*\n)+", f"    server node1 127.0.0.1:{NODE_PORT} check\n",
                  config)


@pytest.fixture(scope="module")
def site(tmp_path_factory, servers):
    """The gateway (openNDS level 3) and the central site (HAProxy, callpass, simulator)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("opennds-venue")
    cert, pem = make_certificate(folder)
    with Topology() as topo:
        database = servers.new_database(folder)
        config = write_config(
            folder / "callpass.toml", port=NODE_PORT, database=database,
            provider_url=f"http://{topo.provider_ip}:{SIM_PORT}", firewall="noop",
            sections={"portal": {"public_url": f"https://{HOST}/", "trusted_proxy": "127.0.0.1",
                                 "session_minutes": SESSION_MINUTES}})
        # The venue, as an operator adds it: the faskey on the standard input.
        added = subprocess.run(
            [sys.executable, "-m", "portal", "venue", "add", "cafe", "--name", "Cafe",
             "--opennds-gateway", GATEWAY_NAME, "--faskey", "-", "--config", str(config)],
            input=FASKEY + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert added.returncode == 0, added.stderr
        listed = subprocess.run([sys.executable, "-m", "portal", "venue", "list",
                                 "--config", str(config)],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert f"opennds-gateway={GATEWAY_NAME}" in listed.stdout and FASKEY not in listed.stdout

        log_path = folder / "central.log"
        (folder / "haproxy.cfg").write_text(haproxy_conf(topo, pem))
        with log_path.open("w") as log:
            topo.popen("upstream", sys.executable, "-m", "portal", "simulator",
                       "--host", topo.provider_ip, "--port", str(SIM_PORT), "--callback-url",
                       f"http://127.0.0.1:{NODE_PORT}/callback/smsc/{TOKEN}",
                       "--secret", SECRET, "--login", "venue", "--password", "venue-password",
                       stdout=log, stderr=log, cwd=ROOT)
            topo.popen("upstream", sys.executable, "-m", "portal", "serve",
                       "--config", str(config), stdout=log, stderr=log, cwd=ROOT)
            topo.popen("upstream", "haproxy", "-db", "-f", str(folder / "haproxy.cfg"),
                       stdout=log, stderr=log)
        topo.cert = cert
        topo.log_path = log_path
        topo.engine = storage.connect(database)
        assert wait_until(lambda: https(topo, "gateway", "/healthz", "-f")[0] == 0, seconds=30), \
            log_path.read_text()

        nds = OpenNDSGateway(topo, folder / "opennds", fasport=443, faskey=FASKEY,
                             conf_text=venue_conf(topo), hosts=[f"{topo.upstream.ip} {HOST}"],
                             ca_file=cert)
        try:
            nds.start()
            for guest in ("guest1", "guest2"):
                assert nds.lease(guest), nds.dnsmasq_log_path.read_text()
            topo.nds = nds
            with topo.http_server("upstream", 80, body=INTERNET_BODY, ip=topo.upstream.ip):
                yield topo
            topo.engine.dispose()
        finally:
            nds.close()


def curl(topo, host, *args, timeout=6):
    """curl in host's namespace, trusting the test's CA, portal.test at the central site."""
    done = topo.run(host, "curl", "-s", "--max-time", str(timeout), "-H", "Accept-Language: en",
                    "--cacert", str(topo.cert), "--resolve", f"{HOST}:443:{topo.upstream.ip}",
                    *args, timeout=timeout + 5)
    return done.returncode, done.stdout


def https(topo, host, path, *args):
    return curl(topo, host, *args, f"https://{HOST}{path}")


def location(headers):
    return next((line.split(":", 1)[1].strip() for line in headers.splitlines()
                 if line.lower().startswith("location:")), "")


def probe(topo, guest):
    code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null",
                         f"http://{topo.upstream.ip}/news?page=1")
    return location(headers) if code == 0 else ""


def reaches_internet(topo, guest):
    return curl(topo, guest, f"http://{topo.upstream.ip}/") == (0, INTERNET_BODY)


def php_decrypt(url):
    """The client details in a level 3 redirect, decrypted by PHP (as openNDS's FAS examples do)."""
    query = parse_qs(urlsplit(url).query)
    fas, iv = query["fas"][0], query["iv"][0]
    script = (f'echo openssl_decrypt(base64_decode("{fas}"), "aes-256-cbc", "{FASKEY}", 0, '
              f'"{iv}");')
    done = subprocess.run(["php", "-r", script], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and done.stdout, done.stderr
    return dict(pair.split("=", 1) for pair in done.stdout.split(", ") if "=" in pair)


def authenticated(topo):
    clients = json.loads(topo.nds.ndsctl("json").stdout or "{}").get("clients", {})
    return {mac: entry for mac, entry in clients.items() if entry["state"] == "Authenticated"}


def test_the_gateway_lets_a_guest_in_after_the_call_through_its_authmon(site, tmp_path):
    for guest in ("guest1", "guest2"):
        assert probe(site, guest).startswith(f"https://{HOST}"), site.nds.log_path.read_text()
        assert not reaches_internet(site, guest)
    redirect = probe(site, "guest1")
    assert "/opennds/cafe/?fas=" in redirect and "&iv=" in redirect
    details = php_decrypt(redirect)
    assert details["clientmac"] == site.guest1.mac
    assert unquote(details["gatewayname"]).startswith(GATEWAY_NAME + " Node:")  # openNDS adds it

    # Guest 1's sign-in sheet opens the redirect (over HTTPS, through HAProxy) and posts a phone.
    jar = tmp_path / "guest1.cookies"
    code, page = curl(site, "guest1", "-L", "-b", str(jar), "-c", str(jar), redirect)
    assert code == 0 and 'name="phone"' in page, page
    code, headers = https(site, "guest1", "/", "-D", "-", "-o", "/dev/null", "-b", str(jar),
                          "-c", str(jar), "--data-urlencode", f"phone={PHONE}")
    assert code == 0 and " 303" in headers.splitlines()[0], headers
    token = urlsplit(location(headers)).path.rsplit("/", 1)[-1]
    with site.engine.connect() as conn:
        row = conn.execute(select(verification, venue.c.slug)
                           .join(venue, venue.c.id == verification.c.venue_id)
                           .where(verification.c.token == token)).one()
    assert (row.mac, row.ip, row.slug) == (site.guest1.mac, site.guest1.ip, "cafe")
    assert row.gateway_token == hashlib.sha256((details["hid"] + FASKEY).encode()).hexdigest()

    # The call; authmon asks within its 10 s, openNDS lets guest 1 in, callpass hears so.
    code, answer = curl(site, "upstream", "--data", "phone=" + PHONE.lstrip("+"),
                        f"http://{site.provider_ip}:{SIM_PORT}/sim/call", timeout=15)
    assert code == 0 and json.loads(answer)["status"] == 200, answer
    assert wait_until(lambda: reaches_internet(site, "guest1"), seconds=40), \
        site.nds.log_path.read_text()[-3000:]
    assert set(authenticated(site)) == {site.guest1.mac}
    entry = authenticated(site)[site.guest1.mac]
    assert -10 <= int(entry["session_end"]) - time.time() - SESSION_MINUTES * 60 <= 70

    def access():
        answer = https(site, "guest1", f"/api/verifications/{token}", "-b", str(jar))[1]
        return json.loads(answer)["access"]
    assert wait_until(lambda: access() == "online", seconds=15), access()
    assert not reaches_internet(site, "guest2")

    # The still open wait page sends the browser through openNDS's /opennds_auth/; openNDS
    # hands the (already let in) browser back to callpass, which offers the page it opened.
    code, page = https(site, "guest1", f"/wait/{token}", "-b", str(jar))
    next_url = re.search(r'content="1;url=([^"]+)"', page).group(1).replace("&amp;", "&")
    assert next_url.startswith(f"http://{site.gateway.ip}:{GATEWAY_PORT}/opennds_auth/?tok=")
    code, page = curl(site, "guest1", "-L", "-b", str(jar), "-c", str(jar), next_url)
    assert code == 0 and "You are online" in page, page
    assert f'href="http://{site.upstream.ip}/news?page=1"' in page

    # callpass knows the gateway device, by the MAC openNDS gave.
    with site.engine.connect() as conn:
        venue_id = conn.execute(select(venue.c.id).where(venue.c.slug == "cafe")).scalar()
    assert opennds_remote.nodes(site.engine)[venue_id][0][0] == \
        opennds_remote.colons(details["gatewaymac"])

    # The gateway forgets guest 1 (as after a reboot): its browsing goes to callpass again, and
    # within a poll the gateway lets it in again, for the rest of the same session.
    assert site.nds.ndsctl("deauth", site.guest1.mac).returncode == 0
    assert not reaches_internet(site, "guest1")
    code, page = curl(site, "guest1", "-L", "-b", str(jar), "-c", str(jar), probe(site, "guest1"))
    assert code == 0
    assert wait_until(lambda: reaches_internet(site, "guest1"), seconds=40), \
        site.nds.log_path.read_text()[-3000:]
    assert wait_until(lambda: access() == "online", seconds=15), access()
    with site.engine.connect() as conn:
        assert len(conn.execute(select(verification)).all()) == 1
    assert site.nds.ndsctl("deauth", site.guest1.mac).returncode == 0
