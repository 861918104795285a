"""Which MAC sent a request: the gateway's neighbour table, IPv4 and IPv6.

IPv4 entries come from /proc/net/arp (a file the other tests write); IPv6 ones from `ip neigh`,
run here for real inside a network namespace.
"""

import json
import sys
from pathlib import Path

import pytest
from netns import Namespace, requirements_missing

from portal import neighbours

ROOT = Path(__file__).resolve().parent.parent
GUEST6, GUEST_MAC = "fd77::5", "02:cc:00:00:00:05"
WAN6, WAN_MAC = "fd78::9", "02:cc:00:00:00:09"

LOOK_UP = """
import json, sys
from portal import neighbours
recent = neighbours.RecentNeighbours("/nonexistent", "br-lan")
print(json.dumps({ip: [neighbours.mac_for_ip(ip, "br-lan"), recent.mac_for_ip(ip)]
                  for ip in sys.argv[1:]}))
"""


@pytest.fixture(scope="module")
def gateway():
    """A namespace with a LAN (br-lan) and a WAN (wan0) interface (a veth pair: any two
    interfaces do), one IPv6 neighbour on each."""
    reason = requirements_missing()
    if reason:
        pytest.skip(reason)
    with Namespace("neigh") as ns:
        ns.run("ip", "link", "add", "br-lan", "type", "veth", "peer", "name", "wan0", check=True)
        for iface, address, neighbour, mac in (("br-lan", "fd77::1", GUEST6, GUEST_MAC),
                                                ("wan0", "fd78::1", WAN6, WAN_MAC)):
            ns.run("ip", "link", "set", iface, "up", check=True)
            ns.run("ip", "-6", "addr", "add", f"{address}/64", "dev", iface, "nodad", check=True)
            ns.run("ip", "-6", "neigh", "add", neighbour, "lladdr", mac, "dev", iface,
                   "nud", "permanent", check=True)
        yield ns


def look_up(ns, *ips):
    """{ip: [mac_for_ip, RecentNeighbours.mac_for_ip]} inside the namespace."""
    done = ns.run(sys.executable, "-c", LOOK_UP, *ips, cwd=str(ROOT), check=True)
    return json.loads(done.stdout)


def test_an_ipv6_guest_is_found_on_the_lan_and_only_there(gateway):
    found = look_up(gateway, GUEST6, "fd77:0:0:0:0:0:0:5", WAN6, "fd77::6", "fe80::1%br-lan")
    assert found[GUEST6] == [GUEST_MAC, GUEST_MAC]
    assert found["fd77:0:0:0:0:0:0:5"] == [GUEST_MAC, GUEST_MAC]  # however it is written
    assert found[WAN6] == [None, None]  # a neighbour on the WAN side never signs in
    assert found["fd77::6"] == [None, None]
    assert found["fe80::1%br-lan"] == [None, None]


def test_new_addresses_have_the_table_read_at_most_ten_times_a_second(monkeypatch):
    """A guest can take any number of IPv6 addresses: answering probes from each new one must
    not run `ip` for each."""
    clock = [1000.0]
    reads = []
    monkeypatch.setattr(neighbours.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(neighbours, "_ip_neigh",
                        lambda argv: reads.append(argv) or {GUEST6: GUEST_MAC})
    recent = neighbours.RecentNeighbours("/nonexistent", "br-lan")

    assert recent.mac_for_ip(GUEST6) == GUEST_MAC
    assert reads == [["-6", "neigh", "show", "dev", "br-lan"]]
    for i in range(500):  # within one tenth of a second
        assert recent.mac_for_ip(f"fd77::{i + 100:x}") is None
        clock[0] += 0.09 / 500
    assert len(reads) == 1
    clock[0] += 0.02
    assert recent.mac_for_ip("fd77::aaaa") is None
    assert len(reads) == 2
    assert recent.mac_for_ip(GUEST6) == GUEST_MAC  # known: from the copy, no read
    assert len(reads) == 2
    clock[0] += 1.01
    assert recent.mac_for_ip(GUEST6) == GUEST_MAC  # a second old: read again
    assert len(reads) == 3
