"""Hostile guests on a real gateway: namespaced guests, `callpass serve` with deploy/callpass-fw
on real nftables, the simulator upstream (see tests/netns.py for the plan).

- guest2 types guest1's phone number: it is refused while guest1 waits, and guest1's call lets
  only guest1 through (before: both were let in, the attacker under the victim's number).
- guest2 opens 300 slow connections to the portal: guest1's pages and probes and the provider's
  notification are still answered within a second.
"""

import json
import sys
from pathlib import Path

import pytest
from conftest import wait_until
from netns import Topology, requirements_missing
from serve_support import SECRET, TOKEN, write_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "callpass-fw"
PORTAL_PORT = 8080
SIM_PORT = 8081
INTERNET_BODY = "the internet"

SLOW_CLIENT = """
import socket, sys, time
conns = []
for _ in range(300):
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        conn.sendall(b"GET / HTTP/1.1\\r\\nHost: portal\\r\\n")
        conns.append(conn)
    except OSError:
        pass
print(len(conns), flush=True)
while True:
    for conn in list(conns):
        try:
            conn.sendall(b"X-Drip: 1\\r\\n")
        except OSError:
            conns.remove(conn)
    time.sleep(5)
"""


@pytest.fixture
def gateway(tmp_path, database_url):
    """The topology with the firewall up, serve on the gateway and the simulator upstream."""
    reason = requirements_missing()
    if reason:
        pytest.skip(reason)
    with Topology() as topo:
        topo.run("gateway", str(SCRIPT), "up", "--lan", topo.lan_iface,
                 "--portal-port", str(PORTAL_PORT), check=True)
        config = write_config(tmp_path / "callpass.toml", port=PORTAL_PORT,
                              database=database_url,
                              provider_url=f"http://{topo.provider_ip}:{SIM_PORT}", script=SCRIPT,
                              listen_host="0.0.0.0", public_host=topo.gateway.ip)
        log = (tmp_path / "serve.log").open("w")
        topo.popen("upstream", sys.executable, "-m", "portal", "simulator",
                   "--host", topo.provider_ip, "--port", str(SIM_PORT), "--callback-url",
                   f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}/callback/smsc/{TOKEN}",
                   "--secret", SECRET, "--login", "venue", "--password", "venue-password",
                   stdout=log, stderr=log, cwd=ROOT)
        topo.popen("gateway", sys.executable, "-m", "portal", "serve", "--config", str(config),
                   stdout=log, stderr=log, cwd=ROOT)
        topo.portal = f"http://{topo.gateway.ip}:{PORTAL_PORT}"
        assert wait_until(lambda: curl(topo, "gateway", f"{topo.portal}/healthz")[0] == 0,
                          seconds=20), \
            (tmp_path / "serve.log").read_text()
        with topo.http_server("upstream", 80, body=INTERNET_BODY):
            yield topo
        log.close()


def curl(topo, host, *args, timeout=4):
    """Run curl in host's namespace; returns (exit code, stdout)."""
    done = topo.run(host, "curl", "-s", "--max-time", str(timeout), *args, timeout=timeout + 5)
    return done.returncode, done.stdout


def timed_curl(topo, host, *args):
    """(exit code, stdout, seconds) of one curl in host's namespace, timed by curl itself."""
    code, out = curl(topo, host, "-w", "\n%{time_total}", *args)
    body, _, seconds = out.rpartition("\n")
    return code, body, float(seconds or "nan")



def ask(topo, guest, phone):
    """Post the phone form from guest; (HTTP status, page or token)."""
    code, out = curl(topo, guest, "-D", "-", "--data-urlencode", f"phone={phone}",
                     "-H", "Accept-Language: en", f"{topo.portal}/")
    assert code == 0, out
    status = int(out.split()[1])
    if status == 303:
        location = next(line for line in out.splitlines() if line.lower().startswith("location:"))
        return status, location.rsplit("/", 1)[-1].strip()
    return status, out


def test_typing_someone_elses_number_gets_an_attacker_nothing(gateway):
    topo = gateway
    internet = f"http://{topo.upstream.ip}/"
    status, token = ask(topo, "guest1", "+7 916 123-45-67")
    assert status == 303

    # The attacker types the victim's number while the victim waits.
    status, page = ask(topo, "guest2", "+79161234567")
    assert status == 409
    assert "already waiting for a call on another device" in page

    # The victim calls: the victim is online, the attacker still captive.
    code, answer = curl(topo, "upstream", "--data", "phone=79161234567",
                        f"http://{topo.provider_ip}:{SIM_PORT}/sim/call", timeout=15)
    assert code == 0 and json.loads(answer)["status"] == 200, answer
    assert wait_until(lambda: json.loads(curl(topo, "guest1", f"{topo.portal}/api/verifications/"
                                             f"{token}")[1])["access"] == "online", seconds=20)
    assert curl(topo, "guest1", internet) == (0, INTERNET_BODY)
    assert curl(topo, "guest2", internet)[1] != INTERNET_BODY
    listed = json.loads(topo.run("gateway", str(SCRIPT), "list", check=True).stdout)
    assert [entry["mac"] for entry in listed] == [topo.guest1.mac]


def test_slow_connections_from_one_guest_do_not_stop_the_others_or_the_provider(gateway):
    topo = gateway
    slow = topo.popen("guest2", sys.executable, "-c", SLOW_CLIENT, topo.gateway.ip,
                      str(PORTAL_PORT), stdout=-1, text=True)
    opened = int(slow.stdout.readline())
    assert opened <= 32  # the firewall's per-guest connection cap (callpass-fw)

    code, _, seconds = timed_curl(topo, "guest1", "-o", "/dev/null",
                                  f"http://{topo.upstream.ip}/generate_204")
    assert code == 0 and seconds < 1
    code, page, seconds = timed_curl(topo, "guest1", f"{topo.portal}/")
    assert code == 0 and 'name="phone"' in page and seconds < 1
    code, answer, seconds = timed_curl(topo, "upstream", "--data", "waitcall=1&phone=1&ts=1",
                                       f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}"
                                       f"/callback/smsc/{TOKEN}")
    assert code == 0 and seconds < 1, answer


def test_a_device_on_the_wan_side_cannot_start_a_verification(gateway):
    """The upstream host has a neighbour entry on the gateway too, on its uplink: not gateway.lan."""
    topo = gateway
    code, out = curl(topo, "upstream", "-D", "-", "-o", "/dev/null", "--data-urlencode",
                     "phone=+79161234567", "-H", f"Host: {topo.gateway.ip}:{PORTAL_PORT}",
                     f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}/")
    assert code == 0 and out.split()[1] == "403", out
    neighbours = topo.run("gateway", "ip", "neigh", "show", "dev", topo.gateway_wan_iface).stdout
    assert topo.upstream.ip in neighbours  # it does have an entry, on the uplink
