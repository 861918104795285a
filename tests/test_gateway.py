"""The whole path on real parts: two guests, a gateway running `callpass-fw up` and `callpass serve`
with the script firewall, and an upstream running the SMSC simulator (on the provider's own
address) and a stand-in internet server.

Guest 1 is captive, posts its phone, the simulator places the call, the notification reaches the
portal, and guest 1 gets through — to the internet, never to the provider's API; guest 2 never
verified and stays blocked; revoking guest 1 blocks it again. And when something flushes the
gateway's ruleset, callpass puts its table back within seconds.
"""

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_until
from sqlalchemy import select
from netns import IPV6, Topology, requirements_missing
from serve_support import SECRET, TOKEN, write_config

from portal import storage

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "callpass-fw"
PORTAL_PORT = 8080
SIM_PORT = 8081
INTERNET_BODY = "the internet"
GARDEN = "192.0.2.0/24"


@pytest.fixture
def topo():
    reason = requirements_missing()
    if reason:
        pytest.skip(reason)
    with Topology() as topology:
        yield topology


@pytest.fixture
def portal(topo, tmp_path, database_url):
    """`callpass-fw up` and `callpass serve` on the gateway, the simulator on the provider's
    address upstream, a web server on the other upstream address; yields the portal's URL."""
    up = topo.run("gateway", str(SCRIPT), "up", "--lan", topo.lan_iface,
                  "--portal-port", str(PORTAL_PORT))
    assert up.returncode == 0, up.stderr
    config = tmp_path / "callpass.toml"
    write_config(config, port=PORTAL_PORT, database=database_url,
                 provider_url=f"http://{topo.provider_ip}:{SIM_PORT}", script=SCRIPT,
                 listen_host="*", public_host=topo.gateway.ip,
                 sections={"portal": {"session_minutes": 30}, "gateway": {"garden": [GARDEN]}})
    logs = (tmp_path / "serve.log").open("w"), (tmp_path / "sim.log").open("w")
    try:
        topo.popen("upstream", sys.executable, "-m", "portal", "simulator",
                   "--host", topo.provider_ip, "--port", str(SIM_PORT),
                   "--callback-url", f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}/callback/smsc/{TOKEN}",
                   "--secret", SECRET, "--login", "venue", "--password", "venue-password",
                   stdout=logs[1], stderr=logs[1], cwd=ROOT)
        topo.popen("gateway", sys.executable, "-m", "portal", "serve", "--config", str(config),
                   stdout=logs[0], stderr=logs[0], cwd=ROOT)
        url = f"http://{topo.gateway.ip}:{PORTAL_PORT}"
        assert wait_until(lambda: curl(topo, "gateway", f"{url}/healthz")[0] == 0, seconds=20), \
            (tmp_path / "serve.log").read_text()
        # callpass resolved the provider's host and keeps guests away from it.
        assert wait_until(lambda: topo.provider_ip in nft_set(topo, "provider4"), seconds=20), \
            (tmp_path / "serve.log").read_text()
        with topo.http_server("upstream", 80, body=INTERNET_BODY, ip=topo.upstream.ip):
            yield url
    finally:
        for log in logs:
            log.close()


def curl(topo, host, *args, timeout=4):
    """Run curl in host's namespace; returns (exit code, stdout)."""
    done = topo.run(host, "curl", "-s", "--max-time", str(timeout), *args, timeout=timeout + 5)
    return done.returncode, done.stdout



def nft_set(topo, name):
    """The text of set `name` of table inet callpass on the gateway ("" when it is missing)."""
    return topo.run("gateway", "nft", "list", "set", "inet", "callpass", name).stdout


def allowed_macs(topo):
    done = topo.run("gateway", str(SCRIPT), "list")
    return {entry["mac"] for entry in json.loads(done.stdout)} if done.returncode == 0 else set()


def is_captive(topo, guest):
    """True when guest's web goes to the portal and its other traffic goes nowhere."""
    code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null", f"http://{topo.upstream.ip}/")
    return (code == 0 and " 302" in headers.splitlines()[0]
            and curl(topo, guest, f"http://{topo.upstream.ip}:{SIM_PORT}/", timeout=2)[0] == 28)


def get_online(topo, portal, guest, phone, *via):
    """guest posts phone (+ and digits), the simulator places the call; returns the state of
    the verification. via: curl options for the guest's requests (e.g. --connect-to)."""
    code, headers = curl(topo, guest, *via, "-D", "-", "-o", "/dev/null",
                         "--data-urlencode", f"phone={phone}", f"{portal}/")
    assert code == 0 and " 303" in headers.splitlines()[0], headers
    token = next(line for line in headers.splitlines()
                 if line.lower().startswith("location:")).rsplit("/", 1)[-1].strip()
    status = json.loads(curl(topo, guest, *via, f"{portal}/api/verifications/{token}")[1])
    assert status["state"] == "pending" and status["call_number"].startswith("+7")
    code, answer = curl(topo, "upstream", "--data", "phone=" + phone.lstrip("+"),
                        f"http://{topo.provider_ip}:{SIM_PORT}/sim/call", timeout=15)
    assert code == 0 and json.loads(answer)["status"] == 200, answer
    return json.loads(curl(topo, guest, *via, f"{portal}/api/verifications/{token}")[1])["state"]


def test_guest_gets_online_by_calling_on_a_real_gateway(topo, portal):
    internet = f"http://{topo.upstream.ip}/"
    provider_api = f"http://{topo.provider_ip}:{SIM_PORT}/sim/state"

    # Both guests are captive: port 80 is answered by the portal, other ports are dropped.
    for guest in ("guest1", "guest2"):
        code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null", internet)
        assert code == 0 and " 302" in headers.splitlines()[0], headers
        assert f"Location: {portal}/" in headers
        assert is_captive(topo, guest)

    # Guest 1 calls (callpass on the gateway asks the provider for the number: it reaches it).
    assert get_online(topo, portal, "guest1", "+79161234567") == "confirmed"

    # Guest 1 is online, but not to the provider's API: refused at once, not after a timeout.
    assert curl(topo, "guest1", internet) == (0, INTERNET_BODY)
    started = time.monotonic()
    assert curl(topo, "guest1", provider_api)[0] == 7  # curl: could not connect
    assert time.monotonic() - started < 1
    assert curl(topo, "gateway", provider_api)[0] == 0  # the gateway itself still can
    assert is_captive(topo, "guest2")

    listed = json.loads(topo.run("gateway", str(SCRIPT), "list", check=True).stdout)
    entry = next(e for e in listed if e["mac"] == topo.guest1.mac)
    assert 29 * 60 < entry["seconds_left"] <= 30 * 60

    # Revoked: blocked again at once.
    topo.run("gateway", str(SCRIPT), "revoke", topo.guest1.mac, check=True)
    code, body = curl(topo, "guest1", internet)
    assert code == 0 and body != INTERNET_BODY  # answered by the portal, not the internet
    assert is_captive(topo, "guest1")


def test_a_guest_signs_in_over_ipv6_on_a_dual_stack_lan(topo, portal, tmp_path, database_url):
    """portal.listen "*:8080" listens on IPv4 and IPv6: a guest whose browser uses IPv6 is sent
    to the portal, identified by the gateway's IPv6 neighbour table, signs in, and then reaches
    the internet over both; the other guest stays captive over both."""
    topo.add_ipv6()
    internet6 = f"http://[{IPV6['upstream']}]/"
    # As a browser does when the portal's name has an IPv6 address: the portal's URL, over IPv6.
    over_ipv6 = ("--connect-to", f"{topo.gateway.ip}:{PORTAL_PORT}:[{IPV6['gateway']}]:{PORTAL_PORT}")
    with topo.http_server("upstream", 80, body=INTERNET_BODY, ip="::"):
        for guest in ("guest1", "guest2"):
            code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null", internet6)
            assert code == 0 and " 302" in headers.splitlines()[0], headers
            assert f"Location: {portal}/" in headers
            assert curl(topo, guest, f"http://[{IPV6['upstream']}]:{SIM_PORT}/", timeout=2)[0] == 28

        probe = f"{portal}/generate_204"  # the portal answers probes sent to it, too
        code, headers = curl(topo, "guest1", *over_ipv6, "-D", "-", "-o", "/dev/null", probe)
        assert code == 0 and " 302" in headers.splitlines()[0], headers

        assert get_online(topo, portal, "guest1", "+79161234567", *over_ipv6) == "confirmed"

        def probe_says_online():
            code, headers = curl(topo, "guest1", *over_ipv6, "-D", "-", "-o", "/dev/null", probe)
            return code == 0 and " 204" in headers.splitlines()[0]

        assert wait_until(probe_says_online), (tmp_path / "serve.log").read_text()

        assert wait_until(lambda: curl(topo, "guest1", internet6) == (0, INTERNET_BODY)), \
            (tmp_path / "serve.log").read_text()
        assert curl(topo, "guest1", f"http://{topo.upstream.ip}/") == (0, INTERNET_BODY)
        assert allowed_macs(topo) == {topo.guest1.mac}
        engine = storage.connect(database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(storage.verification.c.ip, storage.verification.c.mac)).all()
        engine.dispose()
        assert [tuple(row) for row in rows] == [(IPV6["guest1"], topo.guest1.mac)]
        code, headers = curl(topo, "guest2", "-D", "-", "-o", "/dev/null", internet6)
        assert code == 0 and " 302" in headers.splitlines()[0], headers


def test_a_flushed_ruleset_is_put_back_within_15_seconds(topo, portal, tmp_path):
    assert get_online(topo, portal, "guest1", "+79161234567") == "confirmed"
    assert curl(topo, "guest1", f"http://{topo.upstream.ip}/") == (0, INTERNET_BODY)

    # What restarting Debian's nftables service does: every table goes, callpass's too.
    topo.run("gateway", "nft", "flush", "ruleset", check=True)
    flushed = time.monotonic()

    def is_back():
        return (topo.run("gateway", str(SCRIPT), "check").returncode == 0
                and topo.guest1.mac in allowed_macs(topo)
                and topo.provider_ip in nft_set(topo, "provider4")
                and GARDEN in nft_set(topo, "garden4"))

    assert wait_until(is_back, seconds=15), (tmp_path / "serve.log").read_text()
    assert time.monotonic() - flushed < 15
    assert is_captive(topo, "guest2")  # the unverified guest is blocked again
    assert curl(topo, "guest1", f"http://{topo.upstream.ip}/") == (0, INTERNET_BODY)

    health = json.loads(curl(topo, "gateway", f"http://127.0.0.1:{PORTAL_PORT}/healthz")[1])
    assert health["firewall"]["ok"] and health["firewall"]["recreated_at"]
    log = (tmp_path / "serve.log").read_text()
    assert "ERROR portal.firewall_sync: firewall: table inet callpass is missing" in log
