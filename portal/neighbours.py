"""Which MAC sent this request: the gateway's neighbour table, looked up by the socket's address.

Guests share the LAN with the portal, so their MAC is in the kernel's neighbour table. Nothing the
guest sends (headers, form fields) is ever used to decide who they are. Only entries on the guest
LAN's interface (gateway.lan) count: a device on the WAN side has a neighbour entry too, on
another interface, and must never be able to sign in.
"""

import hashlib
import ipaddress
import json
import subprocess
import time

INCOMPLETE = "00:00:00:00:00:00"


def mac_for_ip(ip, interface, arp_table="/proc/net/arp"):
    """The MAC the kernel has for ip on interface, lowercase, or None when it has none."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 4:
        return _read_arp_table(arp_table, interface).get(str(address))
    return _from_ip_neigh(str(address), interface)


def _read_arp_table(path, interface):
    """{ip: mac} of the complete IPv4 entries on interface in an /proc/net/arp-format file."""
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return {}
    table = {}
    for line in lines:
        fields = line.split()
        # IP address, HW type, Flags, HW address, Mask, Device; flags 0x0 = incomplete
        if (len(fields) >= 6 and fields[5] == interface and fields[2] != "0x0"
                and fields[3] != INCOMPLETE):
            table.setdefault(fields[0], fields[3].lower())
    return table


class RecentNeighbours:
    """mac_for_ip from a copy of the table up to a second old, for the probe path: reading and
    parsing the kernel's table on every probe costs more than the rest of the answer. An address
    the copy lacks (a device that just joined) has the table read again, at most ten times a
    second per IP family: a guest taking one new IPv6 address after another cannot make the
    portal run `ip` for each. Pages that act on a guest's behalf use mac_for_ip, the table as it
    is now."""

    LIFE_SECONDS = 1.0
    MISS_SECONDS = 0.1

    def __init__(self, arp_table, interface):
        self.readers = {4: lambda: _read_arp_table(arp_table, interface),
                        6: lambda: _read_ipv6_neighbours(interface)}
        self._tables = {4: (float("-inf"), {}), 6: (float("-inf"), {})}  # (read at, {ip: mac})

    def mac_for_ip(self, ip):
        """The MAC for ip, or None."""
        now = time.monotonic()
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        ip = str(address)
        read_at, table = self._tables[address.version]
        age = now - read_at
        if age > self.LIFE_SECONDS or (ip not in table and age > self.MISS_SECONDS):
            table = self.readers[address.version]()
            self._tables[address.version] = (now, table)
        return table.get(ip)


def _from_ip_neigh(ip, interface):
    """The MAC of IPv6 address ip on interface, or None."""
    return _ip_neigh(["neigh", "show", "to", ip, "dev", interface]).get(ip)


def _read_ipv6_neighbours(interface):
    """{ip: mac} of the usable IPv6 entries on interface."""
    return _ip_neigh(["-6", "neigh", "show", "dev", interface])


def _ip_neigh(argv):
    """{ip: mac} of the usable entries `ip -json ARGV` (a `neigh show`) lists; {} on failure."""
    try:
        result = subprocess.run(["ip", "-json", *argv],
                                capture_output=True, text=True, timeout=5, check=False)
        entries = json.loads(result.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    table = {}
    for entry in entries:
        if entry.get("dst") and entry.get("lladdr") and "FAILED" not in entry.get("state", []):
            try:
                table.setdefault(str(ipaddress.ip_address(entry["dst"])), entry["lladdr"].lower())
            except ValueError:
                continue
    return table


def stand_in_mac(ip):
    """A stable, locally administered MAC derived from ip: demo mode's loopback browser has none."""
    digest = hashlib.sha256(ip.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
