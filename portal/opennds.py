"""openNDS on the gateway: `ndsctl` as the firewall backend, callpass as its FAS (level 1).

The backend (`[gateway] firewall = "opennds"`): allow is `ndsctl auth MAC <minutes>` (rounded up;
never 0, which openNDS reads as "its default session"), revoke is `ndsctl deauth MAC`, list reads
`ndsctl json`. ndsctl runs with an argument list, one call at a time, each in its own process
group so a call that hangs is killed whole. openNDS refuses `auth` for a client it has already
authenticated, so a MAC let through for another length of time is deauthenticated first, and one
let through for about the right time is left alone. It refuses `auth` too for a device without a
DHCP lease (one that has left): that MAC is skipped, and the minute-by-minute comparison with the
database lets it through when it is back.

The FAS: openNDS sends a captive guest's browser to `GET /?fas=<base64 of "key=value, ...">`
(faspath "/"). Level 1 is not signed, so a guest can forge every value in it. callpass therefore
never takes the device's identity from it (that stays the socket's address and the neighbour
table) and keeps its values only when its clientmac and clientip are this very device's, its
hid looks like one, and its gatewayaddress is an address of this machine (never loopback): a
forged fas cannot name another device, nor send a browser to another host. Those values (hid,
gatewayaddress, originurl) live in the signed session cookie until the wait page needs them; once
the device is online the wait page sends the browser through
`http://<gatewayaddress>/opennds_auth/?tok=<sha256 hex of hid + faskey>&redir=<originurl>`.
The tok is computed here; the faskey never leaves the server. The guest is let through by the
backend whether or not the page is still open. openNDS 9.10 answers an already authenticated
client's /opennds_auth/ with a redirect back to the FAS (`?status=authenticated&redir=...`),
where the "you are online" page offers the original address as a link.
"""

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import math
import re
import shlex
import socket
import subprocess
import threading
import time
from urllib.parse import unquote, urlencode, urlsplit

from flask import request, session

from . import captive, routers, services
from .firewall import (MAX_SECONDS, Backend, FirewallError, _check_change, _kill_group,
                       normalise_mac)

log = logging.getLogger(__name__)

AUTH_PATH = "/opennds_auth/"
MAX_FAS_LENGTH = 4096        # a real one is about 500 characters
MAX_ORIGIN_LENGTH = 2000
SLACK_SECONDS = 60           # an authenticated MAC this close to the wanted time is left alone
                             # (firewall_sync re-allows beyond 60 s off: the same measure)
SESSION_KEY = "opennds"      # where this device's fas values wait for the wait page
_HID = re.compile(r"[0-9a-f]{64}")
_PORT = re.compile(r"[0-9]{1,5}")


# --- the FAS side -------------------------------------------------------------------------------

def parse_fas(value):
    """{key: value} from openNDS's `fas` parameter (base64 of comma-space key=value pairs, the
    values URL-encoded), or None when it is not that."""
    if not isinstance(value, str) or not value or len(value) > MAX_FAS_LENGTH:
        return None
    try:
        # openNDS puts the base64 in the URL as it is: a "+" in it reads back as a space.
        text = base64.b64decode(value.replace(" ", "+"), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return fields_of(text)


def fields_of(text):
    """{key: value} from openNDS's client details ("key=value, ...", the values URL-encoded), or
    None when there are none."""
    fields = {}
    for pair in text.split(", "):
        key, sep, raw = pair.partition("=")
        if sep and key and key not in fields:  # 9.10 ends with "(null)(null)...": no "="
            fields[key] = unquote(raw)
    return fields or None


def gateway_address(value):
    """openNDS's "ip:port" when ip is an address of this machine other than loopback, else None.

    The browser is sent there after the call: a forged fas must not choose another host."""
    host, sep, port = (value or "").rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified or not is_local_address(str(address)):
        return None
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def is_local_address(ip):
    """Whether this machine has the address ip (it can bind a socket to it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


def origin_url(value):
    """originurl when it is a plain http(s) address to send the browser on to, else ""."""
    if not value or len(value) > MAX_ORIGIN_LENGTH or \
            any(ch.isspace() or ord(ch) < 32 for ch in value):
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or \
            parts.password:
        return ""
    return value


def accept_fas(value, ip, mac):
    """The fas values the flow needs ({"mac", "hid", "gateway", "origin"}) when fas is well formed
    and names this device (ip and mac from the socket and the neighbour table); else None."""
    fields = parse_fas(value)
    if fields is None or mac is None:
        return None
    try:
        if normalise_mac(fields.get("clientmac", "")) != mac:
            return None
    except ValueError:
        return None
    if fields.get("clientip") != ip or not _HID.fullmatch(fields.get("hid", "")):
        return None
    gateway = gateway_address(fields.get("gatewayaddress"))
    if gateway is None:
        return None
    return {"mac": mac, "hid": fields["hid"], "gateway": gateway,
            "origin": origin_url(fields.get("originurl"))}


def auth_token(hid, faskey):
    """openNDS's tok for a client: the sha256 hex digest of hid followed by faskey."""
    return hashlib.sha256((hid + faskey).encode("utf-8")).hexdigest()


def auth_url(fas, faskey):
    """Where the browser goes after the call: openNDS's /opennds_auth/, then the original page."""
    return auth_url_for(fas["gateway"], auth_token(fas["hid"], faskey), fas["origin"])


def auth_url_for(gateway, token, origin):
    """openNDS's /opennds_auth/ at gateway ("ip:port") with tok, then origin (if any)."""
    query = {"tok": token}
    if origin:
        query["redir"] = origin
    return f"http://{gateway}{AUTH_PATH}?{urlencode(query)}"


def is_enabled():
    """Whether the gateway is openNDS (the fas parameter means nothing otherwise)."""
    return services().config["gateway"]["firewall"] == "opennds"


def note_arrival():
    """GET /: keep this device's fas values (if trustworthy) for its wait page.

    A mismatching or garbage fas is ignored: the guest sees the normal form, and the values of
    an earlier good fas of this device are kept."""
    if not is_enabled() or "fas" not in request.args:
        return
    ip, mac = captive.device_identity()
    fas = accept_fas(request.args["fas"], ip, mac)
    if fas is None:
        log.warning("openNDS: ignored a fas parameter that does not name the device at %s", ip)
        return
    session[SESSION_KEY] = fas


def next_url(row):
    """For the wait page of verification row: the openNDS address that sends this browser on,
    when this device arrived from openNDS; else None."""
    fas = session.get(SESSION_KEY) if is_enabled() else None
    if not isinstance(fas, dict) or fas.get("mac") != row.mac:
        return None
    if captive.device_identity()[1] != row.mac:
        return None
    return auth_url(fas, services().config["opennds"]["faskey"])


def origin_after_auth():
    """openNDS sends an already authenticated browser back with `status=authenticated` and its
    `redir`: that address, when it may be offered as a link (see captive.continue_url)."""
    if request.args.get("status") != "authenticated" or \
            not (is_enabled() or (routers.context() or {}).get("kind") == "opennds"):
        return ""
    return captive.continue_url(request.args.get("redir", ""))


# --- the backend ---------------------------------------------------------------------------------

def minutes_for(seconds):
    """ndsctl's minutes for a session of seconds (None: the longest session), rounded up, >= 1."""
    if seconds is None:
        seconds = MAX_SECONDS
    return max(1, math.ceil(seconds / 60))


def auth_argv(mac, seconds):
    """ndsctl's arguments letting mac through for seconds."""
    return ["auth", normalise_mac(mac), str(minutes_for(seconds))]


def deauth_argv(mac):
    """ndsctl's arguments cutting mac off."""
    return ["deauth", normalise_mac(mac)]


def parse_clients(text, now):
    """{mac: (state, seconds left or None)} from `ndsctl json`; ValueError when unreadable."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    clients = data.get("clients", {})
    if not isinstance(clients, dict):
        raise ValueError("clients is not an object")
    found = {}
    for entry in clients.values():
        end = entry["session_end"]
        left = None if end in (None, "null") else max(0, int(end) - int(now))
        found[normalise_mac(entry["mac"])] = (entry["state"], left)
    return found


def command_from_config(value):
    """The ndsctl command prefix from `[opennds] ndsctl` (split like a shell would, never run by
    one); ValueError when empty or unbalanced."""
    argv = shlex.split(value)
    if not argv:
        raise ValueError("opennds.ndsctl is empty")
    return argv


class NdsctlFirewall(Backend):
    """openNDS driven through ndsctl (one call at a time)."""

    name = "opennds"

    @classmethod
    def from_config(cls, config, engine=None):
        return cls(command_from_config(config["opennds"]["ndsctl"]),
                   config["gateway"].get("script_timeout_seconds", 10))

    def __init__(self, command, timeout_seconds=10):
        self.command = list(command)
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()

    def apply(self, changes):
        """Make ("allow", mac, seconds | None) and ("revoke", mac) changes, one ndsctl call each
        (after one `ndsctl json` to know who is authenticated)."""
        checked = [_check_change(change) for change in changes]
        if not checked:
            return
        with self._lock:
            clients = self._clients()
            for change in checked:
                mac = change[1]
                if change[0] == "revoke":
                    self._revoke(mac, clients.get(mac))
                    clients[mac] = ("Preauthenticated", None)
                elif self._allow(mac, change[2], clients.get(mac)):
                    clients[mac] = ("Authenticated", minutes_for(change[2]) * 60)

    def list(self):
        """Authenticated MACs -> seconds left (None: openNDS set no end)."""
        with self._lock:
            clients = self._clients()
        return {mac: left for mac, (state, left) in clients.items() if state == "Authenticated"}

    def is_healthy(self):
        """Whether ndsctl answers."""
        try:
            self.list()
        except FirewallError:
            return False
        return True

    def _allow(self, mac, seconds, client):
        """Let mac through for seconds; True when openNDS lets it through (False: not connected)."""
        if client is not None and client[0] == "Authenticated":
            wanted = MAX_SECONDS if seconds is None else seconds
            if client[1] is not None and abs(client[1] - wanted) <= SLACK_SECONDS:
                return True  # already let through for about that long
            self._ndsctl(deauth_argv(mac))  # auth refuses an authenticated client
        status, output = self._run(auth_argv(mac, seconds))
        if status == 0:
            return True
        if client is None:
            # Not among openNDS's clients and refused: no DHCP lease, the device has left. The
            # periodic comparison lets it through when it is back.
            log.info("openNDS: %s is not connected (no DHCP lease); let through when it is back",
                     mac)
            return False
        raise FirewallError(f"ndsctl auth {mac}: {output or f'exit status {status}'}")

    def _revoke(self, mac, client):
        if client is not None and client[0] == "Authenticated":
            self._ndsctl(deauth_argv(mac))

    def _clients(self):
        text = self._ndsctl(["json"])
        try:
            return parse_clients(text, time.time())
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FirewallError(f"ndsctl json: unreadable answer {text[:200]!r}") from exc

    def _ndsctl(self, argv):
        """Run ndsctl; its stdout, or FirewallError when it fails."""
        status, output = self._run(argv)
        if status != 0:
            raise FirewallError(f"ndsctl {argv[0]}: {output or f'exit status {status}'}")
        return output

    def _run(self, argv):
        """(exit status, what ndsctl said) for argv; FirewallError when it cannot run or hangs."""
        command = [*self.command, *argv]
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            raise FirewallError(f"ndsctl {argv[0]}: cannot run {command[0]}: {exc}") from None
        try:
            stdout, stderr = process.communicate(timeout=self.timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise FirewallError(f"ndsctl {argv[0]}: no answer within "
                                f"{self.timeout_seconds} s") from None
        except BaseException:
            _kill_group(process)
            raise
        # ndsctl answers on stdout and complains on stderr (its last line; the lines before are
        # pgrep noise from openNDS's own scripts).
        complaint = (stderr.strip().splitlines() or [""])[-1]
        return process.returncode, stdout.strip() or complaint
