"""Which MAC sent this request: the gateway's neighbour table, looked up by the socket's address.

Guests share the LAN with the portal, so their MAC is in the kernel's neighbour table. Nothing the
guest sends (headers, form fields) is ever used to decide who they are.
"""

import hashlib
import ipaddress
import json
import subprocess

INCOMPLETE = "00:00:00:00:00:00"


def mac_for_ip(ip, arp_table="/proc/net/arp"):
    """The MAC the kernel has for ip, lowercase, or None when it has none."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 4:
        return _from_arp_table(str(address), arp_table)
    return _from_ip_neigh(str(address))


def _from_arp_table(ip, path):
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # IP address, HW type, Flags, HW address, Mask, Device; flags 0x0 = incomplete
        if len(fields) >= 4 and fields[0] == ip and fields[2] != "0x0" and fields[3] != INCOMPLETE:
            return fields[3].lower()
    return None


def _from_ip_neigh(ip):
    try:
        result = subprocess.run(["ip", "-json", "neigh", "show", "to", ip],
                                capture_output=True, text=True, timeout=5, check=False)
        entries = json.loads(result.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    for entry in entries:
        if entry.get("lladdr") and "FAILED" not in entry.get("state", []):
            return entry["lladdr"].lower()
    return None


def stand_in_mac(ip):
    """A stable, locally administered MAC derived from ip: demo mode's loopback browser has none."""
    digest = hashlib.sha256(ip.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
