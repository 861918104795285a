"""The whole path on real parts: two guests, a gateway running `callpass-fw up` and `callpass serve`
with the script firewall, and an upstream running the SMSC simulator and a stand-in internet server.

Guest 1 is captive, posts its phone, the simulator places the call, the notification reaches the
portal, and guest 1 gets through; guest 2 never verified and stays blocked; revoking guest 1 blocks
it again.
"""

import json
import sys
import time
from pathlib import Path

import pytest
from netns import Topology, requirements_missing
from serve_support import SECRET, TOKEN, write_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "callpass-fw"
PORTAL_PORT = 8080
SIM_PORT = 8081
INTERNET_BODY = "the internet"


@pytest.fixture
def topo():
    reason = requirements_missing()
    if reason:
        pytest.skip(reason)
    with Topology() as topology:
        yield topology


def curl(topo, host, *args, timeout=4):
    """Run curl in host's namespace; returns (exit code, stdout)."""
    done = topo.run(host, "curl", "-s", "--max-time", str(timeout), *args, timeout=timeout + 5)
    return done.returncode, done.stdout


def wait_for(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_guest_gets_online_by_calling_on_a_real_gateway(topo, tmp_path):
    up = topo.run("gateway", str(SCRIPT), "up", "--lan", topo.lan_iface,
                  "--portal-port", str(PORTAL_PORT))
    assert up.returncode == 0, up.stderr
    config = tmp_path / "callpass.toml"
    write_config(config, port=PORTAL_PORT, database=tmp_path / "callpass.sqlite3",
                 provider_url=f"http://{topo.upstream.ip}:{SIM_PORT}", script=SCRIPT,
                 extra="session_minutes = 30", listen_host="0.0.0.0", public_host=topo.gateway.ip)
    logs = (tmp_path / "serve.log").open("w"), (tmp_path / "sim.log").open("w")
    try:
        topo.popen("upstream", sys.executable, "-m", "portal", "simulator",
                   "--host", topo.upstream.ip, "--port", str(SIM_PORT),
                   "--callback-url", f"http://{topo.gateway_wan_ip}:{PORTAL_PORT}/callback/smsc/{TOKEN}",
                   "--secret", SECRET, "--login", "venue", "--password", "venue-password",
                   stdout=logs[1], stderr=logs[1], cwd=ROOT)
        topo.popen("gateway", sys.executable, "-m", "portal", "serve", "--config", str(config),
                   stdout=logs[0], stderr=logs[0], cwd=ROOT)
        portal = f"http://{topo.gateway.ip}:{PORTAL_PORT}"
        assert wait_for(lambda: curl(topo, "gateway", f"{portal}/healthz")[0] == 0), \
            (tmp_path / "serve.log").read_text()
        with topo.http_server("upstream", 80, body=INTERNET_BODY):
            run_story(topo, portal)
    finally:
        for log in logs:
            log.close()


def run_story(topo, portal):
    internet = f"http://{topo.upstream.ip}/"

    # Both guests are captive: port 80 is answered by the portal, other ports are dropped.
    for guest in ("guest1", "guest2"):
        code, headers = curl(topo, guest, "-D", "-", "-o", "/dev/null", internet)
        assert code == 0 and " 302" in headers.splitlines()[0], headers
        assert f"Location: {portal}/" in headers
        assert curl(topo, guest, f"http://{topo.upstream.ip}:{SIM_PORT}/sim/", timeout=2)[0] != 0

    # Guest 1 asks for a number to call.
    code, headers = curl(topo, "guest1", "-D", "-", "-o", "/dev/null",
                         "--data-urlencode", "phone=+7 916 123-45-67", f"{portal}/")
    assert code == 0 and " 303" in headers.splitlines()[0], headers
    token = next(line for line in headers.splitlines()
                 if line.lower().startswith("location:")).rsplit("/", 1)[-1].strip()
    status = json.loads(curl(topo, "guest1", f"{portal}/api/verifications/{token}")[1])
    assert status["state"] == "pending" and status["call_number"].startswith("+7")

    # The guest calls; the simulator notifies the portal over the upstream link.
    code, answer = curl(topo, "upstream", "--data", "phone=79161234567",
                        f"http://{topo.upstream.ip}:{SIM_PORT}/sim/call", timeout=15)
    assert code == 0 and json.loads(answer)["status"] == 200, answer
    status = json.loads(curl(topo, "guest1", f"{portal}/api/verifications/{token}")[1])
    assert status["state"] == "confirmed"

    # Guest 1 is online; guest 2 is still captive.
    assert curl(topo, "guest1", internet) == (0, INTERNET_BODY)
    assert curl(topo, "guest1", f"http://{topo.upstream.ip}:{SIM_PORT}/sim/state")[0] == 0
    code, headers = curl(topo, "guest2", "-D", "-", "-o", "/dev/null", internet)
    assert " 302" in headers.splitlines()[0]
    assert curl(topo, "guest2", f"http://{topo.upstream.ip}:{SIM_PORT}/sim/", timeout=2)[0] != 0

    listed = json.loads(topo.run("gateway", str(SCRIPT), "list", check=True).stdout)
    entry = next(e for e in listed if e["mac"] == topo.guest1.mac)
    assert 29 * 60 < entry["seconds_left"] <= 30 * 60

    # Revoked: blocked again at once.
    topo.run("gateway", str(SCRIPT), "revoke", topo.guest1.mac, check=True)
    code, body = curl(topo, "guest1", internet)
    assert code == 0 and body != INTERNET_BODY  # answered by the portal, not the internet
    assert curl(topo, "guest1", f"http://{topo.upstream.ip}:{SIM_PORT}/sim/", timeout=2)[0] != 0
