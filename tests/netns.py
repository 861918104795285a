"""Throw-away network namespaces for tests that need a real gateway (nftables, routing, ARP).

Topology built by `Topology()`::

    guest1  eth0 10.77.0.11/24  02:cc:00:00:00:11 --veth-- lan1 -+
                                                                 +- br-lan 10.77.0.1/24  02:cc:00:00:00:01
    guest2  eth0 10.77.0.12/24  02:cc:00:00:00:12 --veth-- lan2 -+        (gateway)
                                                                    wan0 10.78.0.1/24 --veth-- eth0 10.78.0.2/24  upstream
                                                                                                    10.78.0.3/24  (the provider's address)

- Guests: default route via 10.77.0.1. Their MACs are fixed (locally administered), so the
  gateway's neighbour table (/proc/net/arp inside the gateway namespace, device br-lan) holds
  them once a guest has talked to the gateway.
- Gateway: IPv4 forwarding on; no NAT. Upstream has a route back to 10.77.0.0/24 via 10.78.0.1,
  so servers in upstream see the guests' real addresses.
- Upstream has a second address, `provider_ip`, for a stand-in of the provider's API: the gateway
  keeps guests away from the provider's addresses, so the rest of the internet needs another one.
- Every namespace has `lo` up; interface names are per namespace (guests and upstream use eth0).
- Namespace names are `cp-<pid>-<6 hex>-<role>`: unique per run, and a later run deletes those whose
  pid is gone (crashed runs) through `cleanup_stale()`, which `Topology()` calls first.

Use::

    from netns import Topology, requirements_missing

    if reason := requirements_missing():
        pytest.skip(reason)
    with Topology() as topo:
        topo.run("gateway", "nft", "list", "ruleset", check=True)
        with topo.http_server("upstream", 80, body="hello"):
            done = topo.run("guest1", "curl", "-s", f"http://{topo.upstream.ip}/")
            assert done.stdout == "hello"

`run`/`popen` take a role ("guest1", "guest2", "gateway", "upstream") or a `Host`. `Namespace` is
the single-namespace building block (for tests that only need somewhere to run nft).
"""

import functools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "cp"
_NAME = re.compile(rf"{PREFIX}-(\d+)-[0-9a-f]{{6}}-[a-z0-9]+")

LAN_PREFIX = 24
LAN_IFACE = "br-lan"


class SetupError(RuntimeError):
    """An `ip` command building or removing the topology failed; the message has its stderr."""


def _ip(*argv, check=True):
    """Run `ip` in the root namespace; SetupError with ip's message when check and it fails."""
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise SetupError(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done


def _list_namespaces():
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _is_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale():
    """Delete namespaces left by crashed runs (name pattern of this module, creator pid gone)."""
    removed = []
    for name in _list_namespaces():
        match = _NAME.fullmatch(name)
        if match and int(match.group(1)) != os.getpid() and not _is_alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


@functools.lru_cache(maxsize=None)
def requirements_missing():
    """Why namespace tests cannot run here (not root, no ip/nft, no netns), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    try:
        with Namespace("probe") as probe:
            done = probe.run("nft", "list", "ruleset")
            if done.returncode != 0:
                return f"nftables does not work in a namespace: {done.stderr.strip()}"
    except (SetupError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    return None


class Namespace:
    """One network namespace, deleted by close() together with any process started in it."""

    def __init__(self, role, run_id=None):
        run_id = run_id or uuid.uuid4().hex[:6]
        self.role = role
        self.name = f"{PREFIX}-{os.getpid()}-{run_id}-{role}"
        self._processes = []
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            # No duplicate address detection: IPv6 link-local addresses are usable at once.
            self.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                     "net.ipv6.conf.default.accept_dad=0")
        except BaseException:
            self.close()
            raise

    def argv(self, *argv):
        """The argument list that runs argv inside this namespace."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv, check=False, timeout=30, **kwargs):
        """subprocess.run inside the namespace; text output captured unless stdout/stderr given."""
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs["capture_output"] = True
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(*argv), check=check, timeout=timeout, **kwargs)

    def popen(self, *argv, **kwargs):
        """subprocess.Popen inside the namespace. The caller closes it; close() stops leftovers."""
        process = subprocess.Popen(self.argv(*argv), **kwargs)
        self._processes.append(process)
        return process

    def close(self):
        """Stop processes started here, then delete the namespace (idempotent)."""
        for process in self._processes:
            _stop(process)
        self._processes.clear()
        _ip("netns", "del", self.name, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stop(process):
    """Terminate (then kill) a Popen and close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@dataclass(frozen=True)
class Host:
    """One machine of the topology: its namespace, address on the shared link, MAC, interface."""

    role: str
    netns: str
    ip: str
    mac: str
    iface: str


# role -> (address, MAC, interface) of each machine
PLAN = {
    "guest1": ("10.77.0.11", "02:cc:00:00:00:11", "eth0"),
    "guest2": ("10.77.0.12", "02:cc:00:00:00:12", "eth0"),
    "gateway": ("10.77.0.1", "02:cc:00:00:00:01", LAN_IFACE),
    "upstream": ("10.78.0.2", "02:cc:00:00:01:02", "eth0"),
}
GATEWAY_WAN_IP = "10.78.0.1"
GATEWAY_WAN_IFACE = "wan0"
LAN_NETWORK = "10.77.0.0/24"
PROVIDER_IP = "10.78.0.3"
# Topology.add_ipv6(): role -> IPv6 address on the same link as its IPv4 one
IPV6 = {"guest1": "fd77::11", "guest2": "fd77::12", "gateway": "fd77::1", "upstream": "fd78::2"}
GATEWAY_WAN_IP6 = "fd78::1"


class Topology:
    """guest1, guest2 -- gateway (br-lan) -- upstream; see the module docstring."""

    lan_iface = LAN_IFACE
    lan_network = LAN_NETWORK
    gateway_wan_ip = GATEWAY_WAN_IP
    gateway_wan_iface = GATEWAY_WAN_IFACE
    provider_ip = PROVIDER_IP

    def __init__(self):
        cleanup_stale()
        run_id = uuid.uuid4().hex[:6]
        self._namespaces = {}
        try:
            for role in PLAN:
                self._namespaces[role] = Namespace(role, run_id)
            self.hosts = {role: Host(role, self._namespaces[role].name, *PLAN[role])
                          for role in PLAN}
            self._wire()
        except BaseException:
            self.close()
            raise

    guest1 = property(lambda self: self.hosts["guest1"])
    guest2 = property(lambda self: self.hosts["guest2"])
    gateway = property(lambda self: self.hosts["gateway"])
    upstream = property(lambda self: self.hosts["upstream"])

    def _wire(self):
        gw = self.gateway.netns
        _ip("-n", gw, "link", "add", LAN_IFACE, "type", "bridge", "forward_delay", "0")
        _ip("-n", gw, "link", "set", LAN_IFACE, "address", self.gateway.mac)
        for number, role in enumerate(("guest1", "guest2"), start=1):
            guest = self.hosts[role]
            port = f"lan{number}"
            _ip("-n", gw, "link", "add", port, "type", "veth", "peer", "name", guest.iface,
                "netns", guest.netns)
            _ip("-n", gw, "link", "set", port, "master", LAN_IFACE, "up")
            _ip("-n", guest.netns, "link", "set", guest.iface, "address", guest.mac)
            _ip("-n", guest.netns, "addr", "add", f"{guest.ip}/{LAN_PREFIX}", "dev", guest.iface)
            _ip("-n", guest.netns, "link", "set", guest.iface, "up")
            _ip("-n", guest.netns, "route", "add", "default", "via", self.gateway.ip)
        _ip("-n", gw, "addr", "add", f"{self.gateway.ip}/{LAN_PREFIX}", "dev", LAN_IFACE)
        _ip("-n", gw, "link", "set", LAN_IFACE, "up")

        up = self.upstream
        _ip("-n", gw, "link", "add", GATEWAY_WAN_IFACE, "type", "veth", "peer", "name", up.iface,
            "netns", up.netns)
        _ip("-n", gw, "addr", "add", f"{GATEWAY_WAN_IP}/24", "dev", GATEWAY_WAN_IFACE)
        _ip("-n", gw, "link", "set", GATEWAY_WAN_IFACE, "up")
        _ip("-n", up.netns, "link", "set", up.iface, "address", up.mac)
        _ip("-n", up.netns, "addr", "add", f"{up.ip}/24", "dev", up.iface)
        _ip("-n", up.netns, "addr", "add", f"{PROVIDER_IP}/24", "dev", up.iface)
        _ip("-n", up.netns, "link", "set", up.iface, "up")
        _ip("-n", up.netns, "route", "add", LAN_NETWORK, "via", GATEWAY_WAN_IP)
        self.run("gateway", "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)

    def add_ipv6(self):
        """Make the topology dual-stack: each host also gets IPV6[role] (/64s: the LAN fd77::,
        the uplink fd78::), the guests and upstream routes through the gateway, which forwards."""
        for role, address in IPV6.items():
            host = self.hosts[role]
            _ip("-n", host.netns, "-6", "addr", "add", f"{address}/64", "dev", host.iface,
                "nodad")
        _ip("-n", self.gateway.netns, "-6", "addr", "add", f"{GATEWAY_WAN_IP6}/64", "dev",
            GATEWAY_WAN_IFACE, "nodad")
        for role in ("guest1", "guest2"):
            _ip("-n", self.hosts[role].netns, "-6", "route", "add", "default", "via", IPV6["gateway"])
        _ip("-n", self.upstream.netns, "-6", "route", "add", "fd77::/64", "via", GATEWAY_WAN_IP6)
        self.run("gateway", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", check=True)

    def _ns(self, host):
        return self._namespaces[host.role if isinstance(host, Host) else host]

    def run(self, host, *argv, **kwargs):
        """subprocess.run of argv in host's namespace (see Namespace.run)."""
        return self._ns(host).run(*argv, **kwargs)

    def popen(self, host, *argv, **kwargs):
        """subprocess.Popen of argv in host's namespace; stopped at close() if still running."""
        return self._ns(host).popen(*argv, **kwargs)

    def neighbours(self):
        """The gateway's IPv4 neighbour table: {ip: mac} from its /proc/net/arp."""
        text = self.run("gateway", "cat", "/proc/net/arp", check=True).stdout
        table = {}
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[3] != "00:00:00:00:00:00":
                table[fields[0]] = fields[3]
        return table

    def link_local(self, host):
        """host's IPv6 link-local address on its topology interface (no zone)."""
        host = self.hosts[host] if isinstance(host, str) else host
        text = self.run(host, "ip", "-6", "-o", "addr", "show", "dev", host.iface, "scope", "link",
                        check=True).stdout
        return text.split()[3].split("/")[0]

    @contextmanager
    def http_server(self, host, port, body="ok", ip="0.0.0.0"):
        """A small HTTP server in host's namespace answering every GET/POST with 200 and body.

        ip may be IPv6 ("::" listens on IPv6 only, leaving IPv4 to another server on the port).

        Yields once it is listening; stopped on exit.
        """
        process = self.popen(host, sys.executable, "-c", _HTTP_SERVER, ip, str(port), body,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([process.stdout], [], [], 10)
            line = process.stdout.readline() if ready else ""
            if line.strip() != "ready":
                try:
                    process.wait(timeout=1)
                    detail = process.stderr.read().strip()
                except subprocess.TimeoutExpired:
                    detail = "not listening after 10 s"
                raise RuntimeError(f"HTTP server in {host} on {ip}:{port} did not start: {detail}")
            yield process
        finally:
            _stop(process)

    def close(self):
        """Delete every namespace (idempotent; also after a failed set-up)."""
        for namespace in self._namespaces.values():
            namespace.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_HTTP_SERVER = """
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ip, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()

class Handler(BaseHTTPRequestHandler):
    def answer(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = answer

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    if ":" in ip:
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()

server = Server((ip, port), Handler)
print("ready", flush=True)
server.serve_forever()
"""


def nft_garden(run):
    """The walled garden's entries in table inet callpass as nft prints them ("192.0.2.0/24",
    "2001:db8::1"), sorted; run(*argv) runs a command where the table is and returns its
    completed process (e.g. a Namespace's run)."""
    entries = []
    for name in ("garden4", "garden6"):
        listing = run("nft", "-j", "list", "set", "inet", "callpass", name)
        [found] = [item["set"] for item in json.loads(listing.stdout)["nftables"] if "set" in item]
        for element in found.get("elem", []):
            prefix = element.get("prefix") if isinstance(element, dict) else None
            entries.append(f"{prefix['addr']}/{prefix['len']}" if prefix else element)
    return sorted(entries)
