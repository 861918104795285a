"""deploy/callpass-fw against real nftables: two guests, a gateway and an upstream in namespaces."""

import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from conftest import wait_until

import netns

SCRIPT = str(Path(__file__).resolve().parent.parent / "deploy" / "callpass-fw")
PORTAL_PORT = 2050
UPSTREAM = "10.78.0.2"


@pytest.fixture(scope="module")
def topo():
    """The topology with a "portal" on the gateway and web servers on upstream ports 80 and 8000."""
    if reason := netns.requirements_missing():
        pytest.skip(reason)
    with netns.Topology() as topo:
        with topo.http_server("gateway", PORTAL_PORT, body="portal"), \
                topo.http_server("upstream", 80, body="upstream", ip=UPSTREAM), \
                topo.http_server("upstream", 8000, body="upstream 8000", ip=UPSTREAM):
            yield topo


@pytest.fixture
def fw(topo):
    """Runs callpass-fw in the gateway (input: text for its stdin); each test starts from a fresh
    `up` on br-lan."""
    def fw(*args, input=None):
        return topo.run("gateway", SCRIPT, *args, input=input)

    fw("down")
    started = fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT))
    assert started.returncode == 0, started.stderr
    yield fw
    fw("down")


def web(topo, host, url):
    """What host gets for url: the body, "reset" (refused at once) or "dropped" (no answer)."""
    done = topo.run(host, "curl", "-sS", "--connect-timeout", "1", "--max-time", "2", url)
    if done.returncode == 0:
        return done.stdout
    if done.returncode == 7:
        return "reset"
    if done.returncode == 28:
        return "dropped"
    raise AssertionError(f"curl {url} from {host}: {done.returncode} {done.stderr}")


def ok(done):
    assert done.returncode == 0, done.stderr
    return done


def allowed(fw):
    return {entry["mac"]: entry["seconds_left"] for entry in json.loads(ok(fw("list")).stdout)}


@contextmanager
def python(topo, host, code, *args):
    """A Python program in host's namespace talking over stdin/stdout lines; first line "ready"."""
    process = topo.popen(host, sys.executable, "-u", "-c", code, *args, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    with process:
        try:
            assert process.stdout.readline().strip() == "ready"
            yield process
        finally:
            process.kill()
            process.wait()


def ask(process, line):
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


ECHO_SERVER = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready")
def echo(conn):
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

# Reads lines from stdin, sends each over one TCP connection and prints the echo or "timeout".
ECHO_CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
conn.settimeout(1)
print("ready")
for line in sys.stdin:
    conn.sendall(line.encode())
    try:
        print(conn.recv(1024).decode().strip() or "closed")
    except OSError:
        print("timeout")
"""

GATEWAY_SERVICES = """
import socket, sys, threading
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((sys.argv[1], 53))
tcp = [socket.create_server((sys.argv[1], port)) for port in (53, 2222)]
def answer_udp():
    while True:
        data, peer = udp.recvfrom(512)
        udp.sendto(b"dns:" + data, peer)
def accept(server):
    while True:
        server.accept()[0].close()
threading.Thread(target=answer_udp, daemon=True).start()
for server in tcp:
    threading.Thread(target=accept, args=(server,), daemon=True).start()
print("ready")
sys.stdin.readline()
"""

GATEWAY_PROBE = """
import json, socket, sys
gateway = sys.argv[1]
found = {}
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(1)
udp.sendto(b"query", (gateway, 53))
try:
    found["udp 53"] = udp.recv(512).decode()
except OSError:
    found["udp 53"] = "dropped"
for port in (53, 2222):
    try:
        socket.create_connection((gateway, port), timeout=1).close()
        found[f"tcp {port}"] = "open"
    except OSError:
        found[f"tcp {port}"] = "dropped"
print("ready")
print(json.dumps(found))
"""


@pytest.mark.netns
def test_unverified_guest_gets_the_portal_for_web_a_reset_for_https_and_nothing_else(topo, fw):
    assert web(topo, "guest1", f"http://{UPSTREAM}/generate_204") == "portal"
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "dropped"
    assert web(topo, "guest1", f"http://{topo.gateway.ip}:{PORTAL_PORT}/") == "portal"

    started = time.monotonic()
    assert web(topo, "guest1", f"https://{UPSTREAM}/") == "reset"
    assert time.monotonic() - started < 0.9


@pytest.mark.netns
def test_gateway_neighbour_table_has_the_guest_mac_once_it_talked(topo, fw):
    web(topo, "guest2", f"http://{topo.gateway.ip}:{PORTAL_PORT}/")
    assert topo.neighbours()[topo.guest2.ip] == topo.guest2.mac


@pytest.mark.netns
def test_ipv6_neighbour_discovery_keeps_working(topo, fw):
    address = topo.link_local("gateway")
    with topo.http_server("gateway", PORTAL_PORT, body="portal over IPv6", ip="::"):
        assert web(topo, "guest1", f"http://[{address}%25eth0]:{PORTAL_PORT}/") == "portal over IPv6"


@pytest.mark.netns
def test_dns_to_the_gateway_is_open_other_gateway_ports_are_not(topo, fw):
    with python(topo, "gateway", GATEWAY_SERVICES, topo.gateway.ip):
        with python(topo, "guest1", GATEWAY_PROBE, topo.gateway.ip) as probe:
            found = json.loads(probe.stdout.readline())
    assert found == {"udp 53": "dns:query", "tcp 53": "open", "tcp 2222": "dropped"}


@pytest.mark.netns
def test_allow_lets_only_that_guest_through_and_revoke_cuts_it_off(topo, fw):
    ok(fw("allow", topo.guest1.mac))
    assert web(topo, "guest1", f"http://{UPSTREAM}/") == "upstream"
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"
    assert web(topo, "guest2", f"http://{UPSTREAM}/") == "portal"

    ok(fw("revoke", topo.guest1.mac))
    assert web(topo, "guest1", f"http://{UPSTREAM}/") == "portal"
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "dropped"
    ok(fw("revoke", topo.guest1.mac))  # absent: still fine


@pytest.mark.netns
def test_revoke_cuts_an_open_connection_at_once(topo, fw):
    ok(fw("allow", topo.guest1.mac.upper().replace(":", "-")))
    with python(topo, "upstream", ECHO_SERVER, UPSTREAM, "9000"):
        with python(topo, "guest1", ECHO_CLIENT, UPSTREAM, "9000") as client:
            assert ask(client, "before") == "before"
            ok(fw("revoke", topo.guest1.mac))
            assert ask(client, "after") == "timeout"


@pytest.mark.netns
def test_allow_with_seconds_expires_in_the_kernel(topo, fw):
    ok(fw("allow", topo.guest1.mac, "2"))
    assert allowed(fw)[topo.guest1.mac] in (1, 2)
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"
    time.sleep(2.5)
    assert allowed(fw) == {}
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "dropped"


@pytest.mark.netns
def test_list_shows_seconds_left_and_allow_again_replaces_the_time(topo, fw):
    assert ok(fw("list")).stdout.strip() == "[]"
    ok(fw("allow", topo.guest1.mac, "100"))
    ok(fw("allow", topo.guest2.mac))
    ok(fw("allow", "AA:BB:CC:DD:EE:FF", "90061"))  # 1d1h1m1s
    assert allowed(fw) == {topo.guest1.mac: 100, topo.guest2.mac: None, "aa:bb:cc:dd:ee:ff": 90061}

    ok(fw("allow", topo.guest1.mac, "5000"))
    assert allowed(fw)[topo.guest1.mac] in (4999, 5000)
    ok(fw("allow", topo.guest1.mac))
    assert allowed(fw)[topo.guest1.mac] is None
    ok(fw("allow", topo.guest1.mac, "60"))
    assert allowed(fw)[topo.guest1.mac] in (59, 60)


@pytest.mark.netns
def test_walled_garden_lets_unverified_guests_reach_it(topo, fw):
    ok(fw("garden", "add", UPSTREAM))
    assert web(topo, "guest2", f"http://{UPSTREAM}:8000/") == "upstream 8000"
    assert web(topo, "guest2", f"http://{UPSTREAM}/") == "upstream"  # not redirected

    ok(fw("garden", "del", UPSTREAM))
    assert web(topo, "guest2", f"http://{UPSTREAM}:8000/") == "dropped"
    assert web(topo, "guest2", f"http://{UPSTREAM}/") == "portal"
    ok(fw("garden", "del", UPSTREAM))  # absent: still fine
    ok(fw("garden", "del", "10.78.0.0/24"))


@pytest.mark.netns
@pytest.mark.parametrize("cidr", ["10.78.0.0/24", "192.168.0.0/16", "8.8.8.8/32", "2001:db8::/32",
                                  "2001:DB8:0:0:0:0:0:1", "fe80::1", "::ffff:10.0.0.0/104",
                                  "1:2:3:4:5:6:7::", "::"])
def test_garden_accepts_ipv4_and_ipv6(topo, fw, cidr):
    ok(fw("garden", "add", cidr))
    ok(fw("garden", "add", cidr))
    listing = ok(topo.run("gateway", "nft", "list", "table", "inet", "callpass")).stdout
    assert "elements = {" in listing
    ok(fw("garden", "del", cidr))
    listing = ok(topo.run("gateway", "nft", "list", "table", "inet", "callpass")).stdout
    assert "elements = {" not in listing


@pytest.mark.netns
def test_garden_del_takes_out_only_that_entry(topo, fw):
    for cidr in ("192.0.2.0/24", "198.51.100.7", "2001:db8::/32"):
        ok(fw("garden", "add", cidr))
    ok(fw("garden", "del", "198.51.100.7"))
    assert netns.nft_garden(partial(topo.run, "gateway")) == ["192.0.2.0/24", "2001:db8::/32"]
    ok(fw("garden", "del", "198.51.100.7"))  # absent now: fine, the rest stays
    ok(fw("garden", "del", "2001:db9::/32"))
    assert netns.nft_garden(partial(topo.run, "gateway")) == ["192.0.2.0/24", "2001:db8::/32"]
    # Part of an entry is not an entry: refused with nft's message, and the entry stays.
    done = fw("garden", "del", "192.0.2.128/25")
    assert done.returncode == 1 and "nft failed" in done.stderr
    assert netns.nft_garden(partial(topo.run, "gateway")) == ["192.0.2.0/24", "2001:db8::/32"]


@pytest.mark.netns
def test_up_again_is_idempotent_and_keeps_allowed_macs_and_garden(topo, fw):
    ok(fw("allow", topo.guest1.mac))
    ok(fw("garden", "add", "192.0.2.0/24"))
    ok(fw("provider", "set", "198.51.100.7"))
    before = ok(topo.run("gateway", "nft", "list", "table", "inet", "callpass")).stdout
    ok(fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT)))
    assert ok(topo.run("gateway", "nft", "list", "table", "inet", "callpass")).stdout == before

    ok(fw("up", "--lan", topo.lan_iface, "--portal-port", "2051"))
    changed = ok(topo.run("gateway", "nft", "list", "table", "inet", "callpass")).stdout
    assert "redirect to :2051" in changed and "redirect to :2050" not in changed
    assert allowed(fw) == {topo.guest1.mac: None}
    assert "192.0.2.0/24" in changed and "198.51.100.7" in changed
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"


@pytest.mark.netns
def test_tls_port_opens_the_gateway_proxy_port_to_guests(topo, fw):
    with topo.http_server("gateway", 8443, body="tls proxy"):
        assert web(topo, "guest1", f"http://{topo.gateway.ip}:8443/") == "dropped"
        ok(fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT),
              "--tls-port", "8443"))
        assert web(topo, "guest1", f"http://{topo.gateway.ip}:8443/") == "tls proxy"
    assert fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT),
              "--tls-port", "443; drop").returncode == 2


@pytest.mark.netns
def test_portal_ip_sends_web_there_with_dnat(topo, fw):
    ok(fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT),
          "--portal-ip", topo.gateway.ip))
    assert web(topo, "guest2", f"http://{UPSTREAM}/") == "portal"
    assert web(topo, "guest2", f"http://{UPSTREAM}:8000/") == "dropped"


@pytest.mark.netns
def test_no_guest_reaches_the_provider_but_the_gateway_does(topo, fw):
    provider = topo.provider_ip
    with topo.http_server("upstream", 8000, body="provider API", ip=provider):
        assert web(topo, "guest1", f"http://{provider}:8000/") == "dropped"  # unverified
        ok(fw("allow", topo.guest1.mac))
        assert web(topo, "guest1", f"http://{provider}:8000/") == "provider API"

        ok(fw("provider", "set", provider, "2001:db8::5"))
        started = time.monotonic()
        assert web(topo, "guest1", f"http://{provider}:8000/") == "reset"  # refused at once
        assert time.monotonic() - started < 0.9
        assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"
        # Not through the walled garden either, nor through the redirect of TCP 80.
        ok(fw("garden", "add", provider))
        assert web(topo, "guest2", f"http://{provider}:8000/") == "reset"
        assert web(topo, "guest1", f"http://{provider}/") == "reset"
        # The gateway itself (callpass asking the provider) is not affected.
        assert ok(topo.run("gateway", "curl", "-sS", "--max-time", "2",
                           f"http://{provider}:8000/")).stdout == "provider API"

        ok(fw("provider", "set", UPSTREAM))  # replaces the set
        assert web(topo, "guest1", f"http://{provider}:8000/") == "provider API"
        assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "reset"
        ok(fw("provider", "set"))  # empty: nobody is kept away
        assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"


# Opens connections to host:port (from the address argv[3], if given) one at a time, keeping them
# open, and answers commands on stdin:
# "open N" -> how many of N new connections were accepted (refused with a reset or not answered:
# not accepted); "close N" -> closes N of the open ones.
CONNECTIONS = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
source = (sys.argv[3], 0) if len(sys.argv) > 3 else None
held = []
print("ready")
for line in sys.stdin:
    command, count = line.split()
    if command == "close":
        for conn in held[:int(count)]:
            conn.close()
        del held[:int(count)]
        print("closed")
        continue
    accepted = 0
    for _ in range(int(count)):
        try:
            held.append(socket.create_connection((host, port), timeout=2,
                                                 source_address=source))
            accepted += 1
        except OSError:
            pass
    print(accepted)
"""


@pytest.mark.netns
def test_one_guest_holds_at_most_32_portal_connections_others_still_connect(topo, fw):
    gateway = topo.gateway.ip
    with python(topo, "guest1", CONNECTIONS, gateway, str(PORTAL_PORT)) as guest1, \
            python(topo, "guest2", CONNECTIONS, gateway, str(PORTAL_PORT)) as guest2:
        assert ask(guest1, "open 32") == "32"
        assert ask(guest1, "open 1") == "0"  # the 33rd: reset
        # Counted per MAC: another address of the same guest does not help it.
        ok(topo.run("guest1", "ip", "addr", "add", "10.77.0.21/24", "dev", "eth0"))
        try:
            with python(topo, "guest1", CONNECTIONS, gateway, str(PORTAL_PORT),
                        "10.77.0.21") as other:
                assert ask(other, "open 1") == "0"
        finally:
            ok(topo.run("guest1", "ip", "addr", "del", "10.77.0.21/24", "dev", "eth0"))
        assert ask(guest2, "open 1") == "1"  # another guest is not affected
        assert web(topo, "guest2", f"http://{UPSTREAM}/") == "portal"
        # Web redirected to the portal counts too. (The reset leaves with the portal's address,
        # which that connection does not know: to the guest it is no answer.)
        assert web(topo, "guest1", f"http://{UPSTREAM}/") == "dropped"
        assert ask(guest1, "close 1") == "closed"
        assert wait_until(lambda: ask(guest1, "open 1") == "1", seconds=5)
        assert ask(guest1, "open 1") == "0"

    # From the uplink side (the provider's callback) nothing is counted.
    with python(topo, "upstream", CONNECTIONS, topo.gateway_wan_ip, str(PORTAL_PORT)) as wan:
        assert ask(wan, "open 40") == "40"



@pytest.mark.netns
def test_check_tells_a_complete_table_from_a_missing_or_broken_one(topo, fw):
    assert ok(fw("check")).stdout == ""
    ok(topo.run("gateway", "nft", "flush", "ruleset"))
    done = fw("check")
    assert done.returncode == 3 and "table inet callpass is missing" in done.stderr
    ok(fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT)))
    ok(fw("check"))

    ok(topo.run("gateway", "nft", "delete", "chain", "inet", "callpass", "forward"))
    ok(topo.run("gateway", "nft", "delete", "set", "inet", "callpass", "provider6"))
    done = fw("check")
    assert done.returncode == 3
    assert "incomplete: no chain forward, set provider6" in done.stderr
    ok(fw("up", "--lan", topo.lan_iface, "--portal-port", str(PORTAL_PORT)))  # repairs it
    ok(fw("check"))


MAC = "02:cc:00:00:00:11"
BAD_ARGUMENTS = [
    ("allow", "zz:bb:cc:dd:ee:ff"),
    ("allow", "aa:bb:cc:dd:ee"),
    ("allow", "aa:bb:cc:dd:ee:ff:00"),
    ("allow", "aa:bb:cc:dd:ee:f"),
    ("allow", "aa:bb-cc:dd:ee:ff"),
    ("allow", "aabb.ccdd.eeff"),
    ("allow", "; rm -rf /"),
    ("allow", "$(id)"),
    ("allow", MAC + "\n"),
    ("allow", MAC + " }"),
    ("allow", ""),
    ("allow",),
    ("allow", MAC, "0"),
    ("allow", MAC, "-5"),
    ("allow", MAC, "1.5"),
    ("allow", MAC, "010"),
    ("allow", MAC, "ten"),
    ("allow", MAC, "2678401"),
    ("allow", MAC, "99999999999999999999"),
    ("allow", MAC, "60", "extra"),
    ("revoke", "$(id)"),
    ("revoke",),
    ("up", "--lan", "br lan", "--portal-port", "2050"),
    ("up", "--lan", "br-lan;id", "--portal-port", "2050"),
    ("up", "--lan", "a-very-long-name", "--portal-port", "2050"),
    ("up", "--lan", "", "--portal-port", "2050"),
    ("up", "--lan", "br-lan", "--portal-port", "0"),
    ("up", "--lan", "br-lan", "--portal-port", "65536"),
    ("up", "--lan", "br-lan", "--portal-port", "80x"),
    ("up", "--lan", "br-lan"),
    ("up", "--portal-port", "2050"),
    ("up", "--lan", "br-lan", "--portal-port", "2050", "--portal-ip", "10.77.0.256"),
    ("up", "--lan", "br-lan", "--portal-port", "2050", "--portal-ip", "10.77.0.1/24"),
    ("up", "--lan", "br-lan", "--portal-port", "2050", "--portal-ip", "portal.example"),
    ("up", "--lan", "br-lan", "--portal-port", "2050", "--bogus"),
    ("up", "--lan", "br-lan", "--portal-port"),
    ("garden", "add", "10.0.0.0/33"),
    ("garden", "add", "10.0.0.1/24"),
    ("garden", "add", "10.0.0.0/"),
    ("garden", "add", "10.0.0.0/024"),
    ("garden", "add", "0.0.0.0/0"),
    ("garden", "add", "300.1.1.1"),
    ("garden", "add", "01.2.3.4"),
    ("garden", "add", "1.2.3"),
    ("garden", "add", "1:2:3:4:5:6:7:8:9"),
    ("garden", "add", "1:2:3:4:5:6:7"),
    ("garden", "add", "2001:db8::1/32"),
    ("garden", "add", "2001:db8::/129"),
    ("garden", "add", "fe80::1%eth0"),
    ("garden", "add", "::1::"),
    ("garden", "add", "12345::"),
    ("garden", "add", "example.com"),
    ("garden", "add", "10.0.0.0/8 }"),
    ("garden", "flip", "10.0.0.0/8"),
    ("garden", "add"),
    ("list", "extra"),
    ("provider",),
    ("provider", "add", "192.0.2.1"),
    ("provider", "set", "192.0.2.1; flush ruleset"),
    ("provider", "set", "192.0.2.1", "192.0.2.0/24"),
    ("provider", "set", "192.0.2.1", "smsc.ru"),
    ("provider", "set", "fe80::1%eth0"),
    ("provider", "set", "192.0.2.1 }"),
    ("provider", "set", *[f"192.0.2.{i % 250 + 1}" for i in range(257)]),
    ("check", "extra"),
    ("down", "now"),
    ("frobnicate",),
    (),
]


@pytest.mark.netns
def test_bad_arguments_exit_2_and_change_nothing(topo, fw):
    ok(fw("allow", topo.guest2.mac))
    before = ok(topo.run("gateway", "nft", "list", "ruleset")).stdout
    for args in BAD_ARGUMENTS:
        done = fw(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip(), args
    assert ok(topo.run("gateway", "nft", "list", "ruleset")).stdout == before


@pytest.mark.netns
def test_verbs_other_than_up_need_the_table(topo, fw):
    ok(fw("down"))
    for args in (("allow", MAC), ("revoke", MAC), ("list",), ("garden", "add", "10.0.0.0/8"),
                 ("garden", "del", "10.0.0.0/8"), ("apply",), ("provider", "set", "192.0.2.1")):
        done = fw(*args, input=f"allow {MAC} 60\nrevoke {MAC}\n")
        assert done.returncode == 1, args
        assert "table inet callpass does not exist: run callpass-fw up first" in done.stderr


@pytest.mark.netns
def test_down_removes_the_table_and_is_idempotent(topo, fw):
    ok(fw("down"))
    assert "callpass" not in ok(topo.run("gateway", "nft", "list", "tables")).stdout
    ok(fw("down"))
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"


@pytest.mark.netns
def test_apply_makes_a_mixed_batch_in_one_go(topo, fw):
    ok(fw("allow", topo.guest2.mac, "100"))  # its time is replaced below
    ok(fw("allow", "02:cc:00:00:00:99"))  # revoked below
    batch = f"""allow {topo.guest1.mac} 600
allow AA-BB-CC-DD-EE-FF

revoke 02:cc:00:00:00:99
revoke 02:cc:00:00:00:98
\tallow  {topo.guest2.mac.upper()}  5000
allow 02:cc:00:00:00:97 60
revoke 02:cc:00:00:00:97
revoke 02:cc:00:00:00:96
allow 02:cc:00:00:00:96 30
"""
    done = ok(fw("apply", input=batch))
    assert done.stdout == ""
    left = allowed(fw)
    assert set(left) == {topo.guest1.mac, "aa:bb:cc:dd:ee:ff", topo.guest2.mac, "02:cc:00:00:00:96"}
    assert left[topo.guest1.mac] in (599, 600)
    assert left["aa:bb:cc:dd:ee:ff"] is None
    assert left[topo.guest2.mac] in (4999, 5000)
    assert left["02:cc:00:00:00:96"] in (29, 30)
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "upstream 8000"

    ok(fw("apply", input=f"revoke {topo.guest1.mac}\nallow {topo.guest2.mac}\n"))
    assert web(topo, "guest1", f"http://{UPSTREAM}:8000/") == "dropped"
    assert allowed(fw)[topo.guest2.mac] is None


# (batch, number of the line the script must name)
BAD_BATCHES = [
    (f"frobnicate {MAC}\n", 1),
    (f"allow {MAC} 60\nallow zz:bb:cc:dd:ee:ff 60\nrevoke {MAC}\n", 2),
    (f"allow {MAC} 60\n\nrevoke {MAC} 60\n", 3),
    (f"allow {MAC} 0\n", 1),
    (f"allow {MAC} 010\n", 1),
    (f"allow {MAC} 2678401\n", 1),
    (f"allow {MAC} 60 extra\n", 1),
    (f"revoke {MAC}\nallow {MAC} 1.5", 2),
    (f"allow {MAC};flush ruleset\n", 1),
    (f"allow {MAC} }}\n", 1),
    ("allow aa:bb-cc:dd:ee:ff\n", 1),
    (f"allow {MAC}\r\n", 1),
    (f"revoke {MAC}\nrevoke ａａ:bb:cc:dd:ee:ff\n", 2),
    (f"revoke {MAC}\x0b\n", 1),
    ("allow\n", 1),
    (f"ALLOW {MAC}\n", 1),
    # A batch of one line is checked by the shell itself, not awk: the same refusals.
    ("revoke ａａ:bb:cc:dd:ee:ff\n", 1),
    ("allow 02:aa:bb:cc:dd:ee:ff\n", 1),
    (f"allow {MAC} -5\n", 1),
    (f"allow {MAC} 6O", 1),
    ("allow *\n", 1),
    (f"allow $(reboot) {MAC}\n", 1),
]


@pytest.mark.netns
def test_apply_with_a_bad_line_anywhere_exits_2_and_changes_nothing(topo, fw):
    def ruleset():
        # Without the time left, which goes down meanwhile.
        text = ok(topo.run("gateway", "nft", "list", "ruleset")).stdout
        return re.sub(r" expires [0-9dhms]+", "", text)

    ok(fw("allow", topo.guest2.mac, "100"))
    before = ruleset()
    for batch, line in BAD_BATCHES:
        done = fw("apply", input=batch)
        assert done.returncode == 2, (batch, done.stderr)
        assert f"line {line}:" in done.stderr, (batch, done.stderr)
    assert fw("apply", "extra", input="").returncode == 2
    assert ruleset() == before
    assert set(allowed(fw)) == {topo.guest2.mac}


@pytest.mark.netns
def test_apply_of_an_empty_batch_changes_nothing(topo, fw):
    ok(fw("allow", topo.guest2.mac))
    ok(fw("apply", input=""))
    ok(fw("apply", input="\n  \n\n"))
    assert allowed(fw) == {topo.guest2.mac: None}


def many_macs(count, byte=0x10):
    """count distinct locally administered MACs."""
    return [f"02:{byte:02x}:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            for i in range(count)]


@pytest.mark.netns
def test_apply_of_10000_lines_in_one_call_and_list_reads_them_all(topo, fw):
    macs = many_macs(10_000)
    # Every third MAC without a time limit, the others with times 10 s apart.
    seconds = {mac: None if i % 3 == 0 else 1000 + 10 * i for i, mac in enumerate(macs)}
    lines = [f"allow {mac}" if left is None else f"allow {mac} {left}"
             for mac, left in seconds.items()]
    ok(fw("apply", input="\n".join(lines) + "\n"))

    listed = allowed(fw)
    assert len(listed) == 10_000 and set(listed) == set(macs)
    for mac, left in seconds.items():
        if left is None:
            assert listed[mac] is None, mac
        else:
            assert left - 5 <= listed[mac] <= left, (mac, listed[mac], left)

    ok(fw("apply", input="".join(f"revoke {mac}\n" for mac in macs[1:])))
    assert allowed(fw) == {macs[0]: None}


# Without root: a stand-in `nft` first on PATH shows what the script sends and how it reads answers.

FAKE_NFT = """#!/bin/sh
# Logs its arguments; `-f -` appends its stdin to $FAKE_NFT_INPUT and fails when $FAKE_NFT_FAIL
# is set (printing it), or for a `create` script when $FAKE_NFT_FAIL_CREATE is. $FAKE_NFT_NO_TABLE: as if table inet callpass were missing;
# $FAKE_NFT_BROKEN: as if nft could not work at all (every listing fails).
printf '%s\\n' "$*" >> "$FAKE_NFT_LOG"
# Succeeds, saying why, when the table cannot be read.
no_table() {
    if [ -n "${FAKE_NFT_BROKEN-}" ]; then
        echo "Error: Operation not permitted" >&2
    elif [ -n "${FAKE_NFT_NO_TABLE-}" ]; then
        echo "Error: No such file or directory" >&2
    else
        return 1
    fi
}
case "$*" in
    "-t list sets inet")
        [ -z "${FAKE_NFT_BROKEN-}" ] || { echo "Error: Operation not permitted" >&2; exit 1; } ;;
    "-t list sets table inet callpass")
        ! no_table ;;
    "-j list set inet callpass allowed" | "-j -t list sets table inet callpass")
        ! no_table || exit 1
        cat "$FAKE_NFT_LISTING" ;;
    "-j list chains inet")
        cat "$FAKE_NFT_CHAINS" ;;
    "-f -")
        script=$(cat)
        printf '%s\\n' "$script" >> "$FAKE_NFT_INPUT"
        case $script in
            create*) [ -z "${FAKE_NFT_FAIL_CREATE-}" ] ||
                { echo "Error: $FAKE_NFT_FAIL_CREATE" >&2; exit 1; } ;;
        esac
        [ -z "${FAKE_NFT_FAIL-}" ] || { echo "Error: $FAKE_NFT_FAIL" >&2; exit 1; } ;;
    *) echo "fake nft: unexpected call" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_nft(tmp_path):
    """Runs callpass-fw with a fake nft; returns run(*args, listing=..., input=..., **env).

    run.log holds one line per nft call, run.input what `nft -f -` read.
    """
    (tmp_path / "nft").write_text(FAKE_NFT)
    (tmp_path / "nft").chmod(0o755)
    log = tmp_path / "nft.log"
    nft_input = tmp_path / "nft.input"

    def run(*args, listing="", chains="", input=None, **extra_env):
        (tmp_path / "listing").write_text(listing)
        (tmp_path / "chains").write_text(chains)
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FAKE_NFT_LOG": str(log),
               "FAKE_NFT_LISTING": str(tmp_path / "listing"), "FAKE_NFT_INPUT": str(nft_input),
               "FAKE_NFT_CHAINS": str(tmp_path / "chains"), **extra_env}
        return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env,
                              input=input, timeout=10)

    run.log = log
    run.input = nft_input
    return run


def nft_json(*elements):
    """What `nft -j list set inet callpass allowed` prints for a set with these elements."""
    head = ('{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", '
            '"json_schema_version": 1}}, {"set": {"family": "inet", "name": "allowed", '
            '"table": "callpass", "type": "ether_addr", "handle": 1, "flags": ["timeout"]')
    if not elements:
        return head + "}}]}\n"
    return head + ', "elem": [' + ", ".join(elements) + "]}}]}\n"


def test_list_reads_the_json_nft_prints(fake_nft):
    listing = nft_json(
        '{"elem": {"val": "02:00:00:00:00:01", "timeout": 86400, "expires": 86399}}',
        '{"elem": {"val": "02:00:00:00:00:02", "timeout": 3723, "expires": 3722}}',
        '"02:00:00:00:00:03"',
        '{"elem": {"val": "02:00:00:00:00:04", "timeout": 1, "expires": 0}}',  # 0 < left < 1 s
        '{"elem": {"val": "02:00:00:00:00:05", "timeout": 172800, "expires": 172799}}',
        '{"elem": {"val": "02:00:00:00:00:06", "timeout": 60}}',  # run out, not yet removed
        '"02:00:00:00:00:07"')
    done = ok(fake_nft("list", listing=listing))
    assert json.loads(done.stdout) == [
        {"mac": "02:00:00:00:00:01", "seconds_left": 86400},
        {"mac": "02:00:00:00:00:02", "seconds_left": 3723},
        {"mac": "02:00:00:00:00:03", "seconds_left": None},
        {"mac": "02:00:00:00:00:04", "seconds_left": 1},
        {"mac": "02:00:00:00:00:05", "seconds_left": 172800},
        {"mac": "02:00:00:00:00:07", "seconds_left": None},
    ]
    assert fake_nft.log.read_text().splitlines() == ["-j list set inet callpass allowed"]
    assert ok(fake_nft("list", listing=nft_json())).stdout == "[]\n"
    assert ok(fake_nft("list", listing=nft_json('"02:00:00:00:00:01"'))).stdout == \
        '[{"mac": "02:00:00:00:00:01", "seconds_left": null}]\n'


@pytest.mark.parametrize("element, shown", [
    ('{"elem": {"val": "02:00:00:00:00:01", "timeout": 60, "expires": "soon"}}', "soon"),
    ('{"elem": {"val": "02:00:00:00:00:01", "timeout": 60, "comment": "x"}}', "comment"),
    ('"02:00:00:00:00:0g"', "02:00:00:00:00:0g"),
    ('{"elem": {"val": "02:00:00:00:00:01:ff", "timeout": 60, "expires": 59}}',
     "02:00:00:00:00:01:ff"),
])
def test_list_refuses_what_it_cannot_read(fake_nft, element, shown):
    done = fake_nft("list", listing=nft_json('"02:00:00:00:00:02"', element))
    assert done.returncode == 1 and shown in done.stderr
    assert done.stdout == ""  # no half answer
    truncated = nft_json('"02:00:00:00:00:02"', '"02:00:00:00:00:03"').split("]}}]}")[0]
    assert fake_nft("list", listing=truncated).returncode == 1


def test_allow_revoke_and_apply_run_one_transaction_and_never_list_first(fake_nft):
    ok(fake_nft("allow", "02-CC-00-00-00-11", "60"))
    ok(fake_nft("revoke", "02:cc:00:00:00:12"))
    ok(fake_nft("allow", "02:cc:00:00:00:13"))
    batch = ("allow 02:cc:00:00:00:21 60\nrevoke 02:cc:00:00:00:22\n\nallow 02:CC:00:00:00:23\n"
             "allow 02:cc:00:00:00:21 30\nallow 02:cc:00:00:00:22 45\nrevoke 02:cc:00:00:00:23\n")
    ok(fake_nft("apply", input=batch))
    assert fake_nft.log.read_text().splitlines() == ["-f -"] * 4
    a, b, c = "02:cc:00:00:00:11", "02:cc:00:00:00:12", "02:cc:00:00:00:13"
    x, y, z = "02:cc:00:00:00:21", "02:cc:00:00:00:22", "02:cc:00:00:00:23"
    assert fake_nft.input.read_text() == "".join([
        # allow of a MAC new to the set: one create, which nft took (the fast form)
        elements("create", f"{a} timeout 60s"),
        # revoke: add + delete, fine whether or not it was there
        elements("add", b), elements("delete", b),
        elements("create", c),
        # the batch (it revokes, so no fast form): every MAC once, its last line deciding
        elements("add", x, y, z), elements("delete", x, y, z),
        elements("add", f"{x} timeout 30s", f"{y} timeout 45s"),
    ])


def test_a_batch_of_one_line_is_applied_as_the_single_verbs_are(fake_nft):
    """The usual batch (a guest who just called) is read by the shell, without awk."""
    ok(fake_nft("apply", input="allow\t02-CC-00-00-00-41\t60"))  # no newline, tabs, dashes
    ok(fake_nft("apply", input="revoke 02:cc:00:00:00:42\n"))
    ok(fake_nft("apply", input="  allow 02:cc:00:00:00:43  \n"))
    ok(fake_nft("apply", input=" \t\n"))  # one blank line: no change, no nft
    assert fake_nft.log.read_text().splitlines() == ["-f -"] * 3
    assert fake_nft.input.read_text() == "".join([
        elements("create", "02:cc:00:00:00:41 timeout 60s"),
        elements("add", "02:cc:00:00:00:42"), elements("delete", "02:cc:00:00:00:42"),
        elements("create", "02:cc:00:00:00:43"),
    ])
    done = fake_nft("apply", input=f"allow {MAC} 60\n", FAKE_NFT_FAIL_CREATE="File exists")
    assert done.returncode == 0, done.stderr


def test_an_allow_that_create_refuses_replaces_the_time_in_one_transaction(fake_nft):
    """The fast form fails whole when a MAC is there already; then the full form runs."""
    done = fake_nft("apply", input=f"allow {MAC} 60\nallow 02:cc:00:00:00:31\n",
                    FAKE_NFT_FAIL_CREATE="File exists")
    assert done.returncode == 0, done.stderr
    assert fake_nft.log.read_text().splitlines() == ["-f -", "-f -"]
    mac = MAC.lower().replace("-", ":")
    assert fake_nft.input.read_text() == "".join([
        elements("create", f"{mac} timeout 60s", "02:cc:00:00:00:31"),
        elements("add", mac, "02:cc:00:00:00:31"), elements("delete", mac, "02:cc:00:00:00:31"),
        elements("add", f"{mac} timeout 60s", "02:cc:00:00:00:31"),
    ])


def test_garden_del_and_down_are_one_add_then_delete_transaction(fake_nft):
    """Whether or not the entry or the table is there, nothing depends on nft's wording."""
    ok(fake_nft("garden", "del", "2001:db8::/32"))
    ok(fake_nft("down"))
    assert fake_nft.log.read_text().splitlines() == ["-f -"] * 2
    assert fake_nft.input.read_text() == (
        "add element inet callpass garden6 { 2001:db8::/32 }\n"
        "delete element inet callpass garden6 { 2001:db8::/32 }\n"
        "add table inet callpass\ndelete table inet callpass\n")
    done = fake_nft("down", FAKE_NFT_FAIL="Operation not permitted")
    assert done.returncode == 1
    assert "Operation not permitted" in done.stderr and "nft failed" in done.stderr


def elements(command, *members):
    """An nft command on set allowed as the script writes it: one element per line."""
    return (f"{command} element inet callpass allowed {{\n"
            + ",\n".join(f"\t{member}" for member in members) + "\n}\n")


def test_apply_of_an_empty_batch_runs_no_nft(fake_nft):
    ok(fake_nft("apply", input=""))
    ok(fake_nft("apply", input="\n \t\n"))
    assert not fake_nft.log.exists()


@pytest.mark.parametrize("batch, line", BAD_BATCHES, ids=repr)
def test_bad_apply_lines_never_reach_nft(fake_nft, batch, line):
    done = fake_nft("apply", input=batch)
    assert done.returncode == 2 and f"line {line}:" in done.stderr
    assert not fake_nft.log.exists()


def test_a_failed_transaction_says_whether_the_table_is_missing(fake_nft):
    done = fake_nft("allow", MAC, FAKE_NFT_FAIL="Could not process rule: No buffer space available")
    assert done.returncode == 1
    assert "No buffer space available" in done.stderr and "nft failed" in done.stderr
    assert "up first" not in done.stderr
    # the fast form, the full form, then the look for the table
    assert fake_nft.log.read_text().splitlines() == ["-f -", "-f -",
                                                     "-t list sets table inet callpass"]

    for args in (("allow", MAC), ("revoke", MAC), ("apply",), ("garden", "add", "10.0.0.0/8"),
                 ("garden", "del", "10.0.0.0/8"), ("list",)):
        done = fake_nft(*args, input=f"allow {MAC}\n", FAKE_NFT_FAIL="No such file or directory",
                        FAKE_NFT_NO_TABLE="1")
        assert done.returncode == 1, args
        assert done.stderr == ("callpass-fw: table inet callpass does not exist: "
                               "run callpass-fw up first\n"), args

    # When nft cannot work at all (not root), saying the table is missing would mislead.
    for args in (("allow", MAC), ("list",), ("garden", "del", "10.0.0.0/8")):
        done = fake_nft(*args, FAKE_NFT_FAIL="Operation not permitted", FAKE_NFT_BROKEN="1")
        assert done.returncode == 1, args
        assert "Operation not permitted" in done.stderr and "nft failed" in done.stderr, args
        assert "up first" not in done.stderr, args


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=repr)
def test_bad_arguments_never_reach_nft(fake_nft, args):
    done = fake_nft(*args)
    assert done.returncode == 2 and done.stderr.strip()
    assert not fake_nft.log.exists()


def test_help(fake_nft):
    done = fake_nft("--help")
    assert done.returncode == 0
    assert "up --lan IFACE --portal-port PORT" in done.stdout
    assert not fake_nft.log.exists()


def test_provider_set_replaces_both_sets_in_one_transaction(fake_nft):
    ok(fake_nft("provider", "set", "192.0.2.1", "2001:db8::1", "198.51.100.2"))
    ok(fake_nft("provider", "set", "192.0.2.1"))
    ok(fake_nft("provider", "set"))
    assert fake_nft.log.read_text().splitlines() == ["-f -"] * 3
    flush = "flush set inet callpass provider4\nflush set inet callpass provider6\n"
    assert fake_nft.input.read_text() == "".join([
        flush, "add element inet callpass provider4 { 192.0.2.1, 198.51.100.2 }\n",
        "add element inet callpass provider6 { 2001:db8::1 }\n",
        flush, "add element inet callpass provider4 { 192.0.2.1 }\n",
        flush,
    ])


def nft_objects(kind, *objects):
    """What `nft -j list chains` or `nft -j -t list sets` prints: objects are (table, name)."""
    listed = [f'{{"{kind}": {{"family": "inet", "table": "{table}", "name": "{name}", '
              f'"handle": {i + 1}}}}}' for i, (table, name) in enumerate(objects)]
    return ('{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}'
            + "".join(", " + text for text in listed) + "]}\n")


COMPLETE_SETS = [("callpass", name) for name in
                 ("allowed", "garden4", "garden6", "provider4", "provider6", "portal_conns")]
COMPLETE_CHAINS = [("callpass", name) for name in ("prerouting", "input", "forward")]


def test_check_reads_only_the_terse_listings(fake_nft):
    done = fake_nft("check", listing=nft_objects("set", *COMPLETE_SETS),
                    chains=nft_objects("chain", ("fw4", "input"), *COMPLETE_CHAINS))
    assert done.returncode == 0, done.stderr
    assert fake_nft.log.read_text().splitlines() == ["-j -t list sets table inet callpass",
                                                     "-j list chains inet"]
    # A chain of the same name in another table does not count.
    done = fake_nft("check", listing=nft_objects("set", *COMPLETE_SETS[:-1]),
                    chains=nft_objects("chain", ("fw4", "forward"), *COMPLETE_CHAINS[:2]))
    assert done.returncode == 3
    assert done.stderr == ("callpass-fw: table inet callpass is incomplete: "
                           "no chain forward, set portal_conns\n")
    done = fake_nft("check", FAKE_NFT_NO_TABLE="1")
    assert done.returncode == 3 and done.stderr == "callpass-fw: table inet callpass is missing\n"
    done = fake_nft("check", FAKE_NFT_BROKEN="1")
    assert done.returncode == 1 and "Operation not permitted" in done.stderr
