"""The gateway firewall, seen from Python: a narrow verb API over deploy/callpass-fw.

`ScriptFirewall` runs the script with an argument list (never a shell) and checks every argument
here first, as the script does again; `apply` sends a batch of allow/revoke changes as lines on
the script's stdin, made one nft transaction. `NoopFirewall` keeps the same bookkeeping in memory
for demo mode and tests. Bad input raises ValueError before anything runs; a failing or hanging
script raises FirewallError.

Besides the guests' MACs the firewall holds the walled garden (`garden`) and the provider's API
addresses that no guest may reach (`provider_set`); `is_complete` asks cheaply whether the table
is still there (`nft flush ruleset` removes it, and with no table forwarding is open).

Every gateway backend (this script, openNDS, a RADIUS router, a UniFi controller) is a `Backend`:
the desired-state core (firewall_sync) gives it batches of allow/revoke changes and, where the
backend can say who it lets through, compares that with the database. Adding a backend is one
module with one `Backend` subclass, named in BACKENDS.
"""

import importlib
import ipaddress
import json
import math
import os
import re
import signal
import subprocess
import threading
import time

from .config import MAX_SESSION_MINUTES
from .config import INTERFACE as _IFACE

MAX_SECONDS = MAX_SESSION_MINUTES * 60  # the script's cap on an allow's duration
MAX_PROVIDER_ADDRESSES = 256  # the script's cap on `provider set`
MISSING_STATUS = 3            # `callpass-fw check`: the table or a part of it is missing
_MAC = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}", re.IGNORECASE)


class FirewallError(Exception):
    """The firewall script failed, timed out or could not be run; the message says why."""


class TableMissing(FirewallError):
    """`callpass-fw check` found the table, or one of its chains or sets, missing."""


def normalise_mac(mac: str) -> str:
    """"AA-BB-CC-DD-EE-FF" or "aa:bb:cc:dd:ee:ff" -> "aa:bb:cc:dd:ee:ff"; ValueError otherwise."""
    if not isinstance(mac, str) or not _MAC.fullmatch(mac):
        raise ValueError(f"not a MAC address (six hex pairs): {mac!r}")
    return mac.lower().replace("-", ":")


def _check_seconds(seconds):
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be a whole number from 1 to {MAX_SECONDS}: {seconds!r}")
    return seconds


def _check_change(change):
    """One change for apply, checked and normalised: ("allow", mac, seconds | None) or
    ("revoke", mac)."""
    if isinstance(change, tuple) and len(change) == 3 and change[0] == "allow":
        return ("allow", normalise_mac(change[1]), _check_seconds(change[2]))
    if isinstance(change, tuple) and len(change) == 2 and change[0] == "revoke":
        return ("revoke", normalise_mac(change[1]))
    raise ValueError(f'a change is ("allow", mac, seconds or None) or ("revoke", mac): {change!r}')


def _change_line(change):
    """A checked change as a line of `callpass-fw apply`."""
    if change[0] == "revoke":
        return f"revoke {change[1]}\n"
    if change[2] is None:
        return f"allow {change[1]}\n"
    return f"allow {change[1]} {change[2]}\n"


def table_of(config):
    """The `up` arguments a config asks for: {"lan", "portal_port", "tls_port"}. ValueError when
    portal.listen has no port number."""
    port = config["portal"]["listen"].rpartition(":")[2]
    if not port.isdigit():
        raise ValueError(f"portal.listen has no port number: {config['portal']['listen']!r}")
    return {"lan": config["gateway"]["lan"], "portal_port": int(port),
            "tls_port": config["gateway"]["tls_port"] or None}


def _check_up(lan, portal_port, portal_ip, tls_port=None):
    """The script's arguments for `up`, checked."""
    if not isinstance(lan, str) or not _IFACE.fullmatch(lan):
        raise ValueError(f"not an interface name: {lan!r}")
    argv = ["up", "--lan", lan, "--portal-port", _check_port("portal port", portal_port)]
    if portal_ip is not None:
        if not isinstance(portal_ip, str) or "%" in portal_ip:
            raise ValueError(f"not an IP address: {portal_ip!r}")
        argv += ["--portal-ip", str(ipaddress.ip_address(portal_ip))]
    if tls_port is not None:
        argv += ["--tls-port", _check_port("TLS port", tls_port)]
    return argv


def _check_port(what, port):
    """port as the script's argument; ValueError unless it is an int 1-65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} must be 1-65535: {port!r}")
    return str(port)


def _check_garden(action, cidr):
    """The script's arguments for `garden`, checked; the network is passed in canonical form."""
    if action not in ("add", "del"):
        raise ValueError(f"garden action must be add or del: {action!r}")
    if not isinstance(cidr, str) or "%" in cidr:
        raise ValueError(f"not an IP address or network: {cidr!r}")
    network = ipaddress.ip_network(cidr, strict=True)  # ValueError on host bits set
    if network.prefixlen == 0:
        raise ValueError("a walled garden of everything is not a garden; allow the MAC instead")
    return ["garden", action, network.with_prefixlen]


def check_provider_addresses(addresses):
    """The provider's addresses for `provider set`, checked: canonical, unique, sorted."""
    if isinstance(addresses, str):
        raise ValueError("addresses must be a list of IP addresses, not one string")
    checked = set()
    for address in addresses:
        if not isinstance(address, str) or "%" in address:
            raise ValueError(f"not an IP address: {address!r}")
        checked.add(ipaddress.ip_address(address))
    if len(checked) > MAX_PROVIDER_ADDRESSES:
        raise ValueError(f"at most {MAX_PROVIDER_ADDRESSES} provider addresses")
    return [str(address) for address in sorted(checked, key=lambda a: (a.version, a))]


class Backend:
    """What the desired-state core asks of a gateway backend. Only `apply` is required; the rest
    have answers for a backend that lacks the capability (a router that asks callpass, say).

    Every method raises FirewallError when the backend fails (the core retries with backoff) and
    ValueError for arguments it refuses.
    """

    name = "backend"

    @classmethod
    def from_config(cls, config, engine):
        """The backend for a loaded config (and the database, for backends that need it)."""
        return cls()

    def apply(self, changes) -> None:
        """Apply ("allow", mac, seconds | None) and ("revoke", mac) changes, in one go if it can."""
        raise NotImplementedError

    def list(self) -> dict[str, int | None] | None:
        """{mac: seconds left or None} the backend lets through, or None when it cannot tell (the
        periodic comparison with the database is then skipped)."""
        return None

    def up(self, lan: str, portal_port: int, portal_ip: str | None = None,
           tls_port: int | None = None) -> None:
        """Create what the backend needs on the gateway (recreating a missing table)."""

    def is_complete(self) -> bool:
        """Whether what `up` creates is all still there."""
        return True

    def garden(self, action: str, cidr: str) -> None:
        """Add or delete a walled-garden entry (a router with its own walled garden: nothing)."""

    def provider_set(self, addresses) -> None:
        """Keep guests away from these addresses (the provider's API), where the backend can."""

    def down(self) -> None:
        """Remove what `up` created (uninstalling)."""

    def is_healthy(self) -> bool:
        """Whether the backend answers."""
        return True


class ScriptFirewall(Backend):
    """deploy/callpass-fw, run as a subprocess (one at a time).

    Each run gets its own session (process group), so a run that times out is killed together with
    whatever it started (nft, awk), not only the shell.
    """

    name = "script"

    @classmethod
    def from_config(cls, config, engine=None):
        gateway = config["gateway"]
        return cls(gateway["script"], gateway.get("script_timeout_seconds", 10))

    def __init__(self, script: str, timeout_seconds: float = 10):
        self.script = str(script)
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()

    def up(self, lan: str, portal_port: int, portal_ip: str | None = None,
           tls_port: int | None = None) -> None:
        """Create or update the ruleset (allowed MACs and the walled garden are kept)."""
        self._run(_check_up(lan, portal_port, portal_ip, tls_port))

    def allow(self, mac: str, seconds: int | None = None) -> None:
        """Let mac through, for seconds or until revoked; replaces an earlier allow's time."""
        argv = ["allow", normalise_mac(mac)]
        if _check_seconds(seconds) is not None:
            argv.append(str(seconds))
        self._run(argv)

    def revoke(self, mac: str) -> None:
        """Cut mac off at once; fine when it was not allowed."""
        self._run(["revoke", normalise_mac(mac)])

    def apply(self, changes) -> None:
        """Make a batch of changes in one nft transaction; an empty batch runs nothing.

        changes: ("allow", mac, seconds or None) and ("revoke", mac) tuples; for a MAC named
        twice the later change wins. Every change is checked before the script runs.
        """
        checked = [_check_change(change) for change in changes]
        if not checked:
            return
        self._run(["apply"], stdin="".join(_change_line(change) for change in checked))

    def list(self) -> dict[str, int | None]:
        """Allowed MACs -> seconds left (None: no time limit)."""
        output = self._run(["list"])
        try:
            entries = json.loads(output)
            return {normalise_mac(entry["mac"]): _seconds_left(entry["seconds_left"])
                    for entry in entries}
        except (ValueError, TypeError, KeyError) as exc:
            raise FirewallError(f"{self.script} list: unreadable answer {output[:200]!r}") from exc

    def garden(self, action: str, cidr: str) -> None:
        """Add or remove (action "add" | "del") a walled-garden address or network."""
        self._run(_check_garden(action, cidr))

    def provider_set(self, addresses) -> None:
        """Keep every guest away from these addresses (the provider's API), replacing the last
        ones in one transaction; an empty list keeps nobody away."""
        self._run(["provider", "set", *check_provider_addresses(addresses)])

    def is_complete(self) -> bool:
        """True when the table and all its chains and sets exist; False when any is missing.

        Reads no set elements (`callpass-fw check`), so it is cheap at any number of guests.
        """
        try:
            self._run(["check"])
        except TableMissing:
            return False
        return True

    def down(self) -> None:
        """Remove the whole ruleset (for uninstalling: with no table forwarding is open)."""
        self._run(["down"])

    def is_healthy(self) -> bool:
        """True when the script answers `list` (it is installed, nft works, `up` was done)."""
        try:
            self.list()
        except FirewallError:
            return False
        return True

    def _run(self, argv, stdin=None):
        """Run the script with argv (and stdin text, if given); its stdout, or FirewallError."""
        command = [self.script, *argv]
        with self._lock:
            try:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    start_new_session=True)
            except OSError as exc:
                raise FirewallError(f"{self.script} {argv[0]}: cannot run: {exc}") from None
            try:
                stdout, stderr = process.communicate(stdin, timeout=self.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise FirewallError(f"{self.script} {argv[0]}: no answer within "
                                    f"{self.timeout_seconds} s") from None
            except BaseException:
                _kill_group(process)  # interrupted: leave nothing running behind
                raise
        if process.returncode != 0:
            message = stderr.strip() or f"exit status {process.returncode}"
            if argv == ["check"] and process.returncode == MISSING_STATUS:
                raise TableMissing(message)
            raise FirewallError(f"{self.script} {argv[0]}: {message}")
        return stdout


def _kill_group(process):
    """Kill a script run and everything it started (its process group), then reap it.

    Killing only the shell would leave nft or awk running, possibly for minutes.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group id is the pid: start_new_session
    except ProcessLookupError:
        pass  # the whole group has already exited
    process.wait()
    # A child that left the group could still hold the pipes open: close them, don't read them.
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _seconds_left(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"bad seconds_left {value!r}")
    return value


class NoopFirewall(Backend):
    """Changes nothing on the machine; remembers allowed MACs and records every verb in `calls`.

    `calls` holds tuples such as ("up", lan, port, portal_ip), ("allow", mac, seconds),
    ("revoke", mac), ("list",), ("garden", action, cidr), ("provider", (address, ...)),
    ("down",); MACs normalised. apply() records each of its changes as the single verb would.
    is_healthy() and is_complete() only ask, and are not recorded. The table is there from the
    start; down() removes it, as `nft flush ruleset` would, and up() makes it again (empty).
    """

    name = "noop"

    def __init__(self):
        self.calls = []
        self._expiry = {}  # mac -> time.monotonic() deadline, or None
        self._garden = set()
        self.provider_addresses = []
        self._is_complete = True
        self._lock = threading.Lock()

    def up(self, lan: str, portal_port: int, portal_ip: str | None = None,
           tls_port: int | None = None) -> None:
        """Record the call (arguments checked like the script does); the table is there."""
        _check_up(lan, portal_port, portal_ip, tls_port)
        self._record("up", lan, portal_port, portal_ip)
        self._is_complete = True

    def allow(self, mac: str, seconds: int | None = None) -> None:
        """Remember mac as allowed, for seconds or without limit."""
        mac = normalise_mac(mac)
        _check_seconds(seconds)
        with self._lock:
            self.calls.append(("allow", mac, seconds))
            self._expiry[mac] = None if seconds is None else time.monotonic() + seconds

    def revoke(self, mac: str) -> None:
        """Forget mac."""
        mac = normalise_mac(mac)
        with self._lock:
            self.calls.append(("revoke", mac))
            self._expiry.pop(mac, None)

    def apply(self, changes) -> None:
        """Make each change in order, recorded in `calls` like allow()/revoke() calls.

        Every change is checked first: a bad one raises ValueError and nothing is recorded.
        """
        checked = [_check_change(change) for change in changes]
        with self._lock:
            now = time.monotonic()
            for change in checked:
                self.calls.append(change)
                if change[0] == "revoke":
                    self._expiry.pop(change[1], None)
                else:
                    seconds = change[2]
                    self._expiry[change[1]] = None if seconds is None else now + seconds

    def list(self) -> dict[str, int | None]:
        """Allowed MACs -> seconds left (rounded up, like the script), expired ones dropped."""
        with self._lock:
            self.calls.append(("list",))
            now = time.monotonic()
            for mac, deadline in list(self._expiry.items()):
                if deadline is not None and deadline <= now:
                    del self._expiry[mac]
            return {mac: None if deadline is None else math.ceil(deadline - now)
                    for mac, deadline in self._expiry.items()}

    def garden(self, action: str, cidr: str) -> None:
        """Record a walled-garden change."""
        network = _check_garden(action, cidr)[2]
        with self._lock:
            self.calls.append(("garden", action, cidr))
            (self._garden.add if action == "add" else self._garden.discard)(network)

    def provider_set(self, addresses) -> None:
        """Remember the addresses no guest may reach."""
        checked = check_provider_addresses(addresses)
        with self._lock:
            self.calls.append(("provider", tuple(checked)))
            self.provider_addresses = checked

    def is_complete(self) -> bool:
        """False after down() until the next up()."""
        return self._is_complete

    def down(self) -> None:
        """Forget everything, as deleting the table does."""
        with self._lock:
            self.calls.append(("down",))
            self._expiry.clear()
            self._garden.clear()
            self.provider_addresses = []
            self._is_complete = False

    def is_healthy(self) -> bool:
        """Always True: there is nothing to fail."""
        return True

    def _record(self, *call):
        with self._lock:
            self.calls.append(call)


# gateway.firewall -> "module:class" of its backend (imported only when chosen).
BACKENDS = {
    "script": "portal.firewall:ScriptFirewall",
    "noop": "portal.firewall:NoopFirewall",
    "radius": "portal.radius:RadiusBackend",
    "opennds": "portal.opennds:NdsctlFirewall",
    "unifi": "portal.unifi:UniFiBackend",
}


def from_config(config: dict, engine=None) -> Backend:
    """The backend named by config["gateway"]["firewall"]."""
    kind = config["gateway"].get("firewall", "script")
    if kind not in BACKENDS:
        raise ValueError(f"gateway.firewall must be one of {', '.join(BACKENDS)}, not {kind!r}")
    module_name, _, class_name = BACKENDS[kind].partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    return backend.from_config(config, engine)
