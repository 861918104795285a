"""Real FreeRADIUS for the tests: deploy/freeradius/ applied over a copy of the stock Debian config
the way deploy/freeradius/README tells a venue admin, started on loopback ports; `radclient`
stands in for the router."""

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from serve_support import stop_process

STOCK = Path("/etc/freeradius/3.0")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "freeradius"
SECRET = "radius-test-shared-secret"


def install(target):
    """Copy the stock config to target and apply deploy/freeradius/ as its README says."""
    shutil.copytree(STOCK, target, symlinks=True)
    for name in ("mods-available/callpass", "sites-available/callpass"):
        shutil.copy(DEPLOY / name, target / name)
    (target / "clients.conf").rename(target / "clients.conf.dist")
    shutil.copy(DEPLOY / "clients.conf", target / "clients.conf")
    for link in (target / "sites-enabled").iterdir():
        link.unlink()
    (target / "mods-enabled" / "eap").unlink()
    (target / "mods-enabled" / "callpass").symlink_to("../mods-available/callpass")
    (target / "sites-enabled" / "callpass").symlink_to("../sites-available/callpass")
    edit(target / "radiusd.conf", (r"(?m)^(\s*proxy_requests\s*=\s*)yes", r"\g<1>no"),
         (r"(?m)^(\s*reject_delay\s*=\s*)[0-9.]*$", r"\g<1>0"))


def adapt_for_test(target, auth_port, acct_port):
    """What only a test changes: loopback and free ports, logs and pid file in the temp folder,
    running as the test's user (root) instead of freerad."""
    edit(target / "sites-available" / "callpass", (r"ipaddr = \*", "ipaddr = 127.0.0.1"),
         (r"port = 1812\b", f"port = {auth_port}"), (r"port = 1813\b", f"port = {acct_port}"))
    edit(target / "radiusd.conf", (r"(?m)^(\s*)(user|group) = ", r"\1#\2 = "),
         (r"(?m)^logdir = .*$", f"logdir = {target}"),
         (r"(?m)^run_dir = .*$", f"run_dir = {target}"))


def edit(path, *substitutions):
    """Apply (pattern, replacement) pairs to a file; each must match at least once."""
    text = path.read_text()
    for pattern, replacement in substitutions:
        text, count = re.subn(pattern, replacement, text)
        assert count, f"{pattern!r} not found in {path}"
    path.write_text(text)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FreeRadius:
    """`freeradius -f -d DIR` with the callpass site on two free loopback ports."""

    def __init__(self, folder, callpass_url, token, secret=SECRET):
        self.folder = Path(folder)
        self.raddb = self.folder / "raddb"
        self.log_path = self.folder / "radius.log"
        self.auth_port, self.acct_port = free_udp_port(), free_udp_port()
        self.secret = secret
        self.environ = dict(os.environ, CALLPASS_URL=callpass_url, CALLPASS_RADIUS_TOKEN=token,
                            CALLPASS_RADIUS_SECRET=secret)
        self.process = None
        install(self.raddb)
        adapt_for_test(self.raddb, self.auth_port, self.acct_port)

    def check(self):
        """`freeradius -C`: (exit status, output)."""
        result = subprocess.run(["freeradius", "-C", "-d", str(self.raddb), "-l", "stdout"],
                                env=self.environ, capture_output=True, text=True, timeout=30)
        return result.returncode, result.stdout + result.stderr

    def start(self):
        # -x: one line per request step in the log, enough to tell why a test failed.
        self.process = subprocess.Popen(
            ["freeradius", "-f", "-x", "-d", str(self.raddb), "-l", str(self.log_path)],
            env=self.environ, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.log_path.exists() and "Ready to process requests" in self.log_path.read_text():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("freeradius did not start:\n" + self.log())

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else "(no log)"

    def stop(self):
        stop_process(self.process)

    def auth(self, attributes):
        """An Access-Request with attributes ({"User-Name": …}) as a router sends it:
        (reply code or None, {attribute: value})."""
        return radclient(self.auth_port, "auth", self.secret, attributes)

    def acct(self, attributes):
        """An Accounting-Request: (reply code or None, {attribute: value})."""
        return radclient(self.acct_port, "acct", self.secret, attributes)


def radius_value(value):
    """A value as radclient reads it: bytes as 0x…, numbers bare, anything else quoted."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_RECEIVED = re.compile(r"^Received (\S+) Id")
_ATTRIBUTE = re.compile(r"^\t(\S+) = (.*)$")


def radclient(port, kind, secret, attributes):
    """Send one request with radclient (one try, 2 s); (reply code or None, reply attributes)."""
    text = "".join(f"{name} = {radius_value(value)}\n"
                   for name, value in attributes.items())
    result = subprocess.run(["radclient", "-x", "-r", "1", "-t", "2", f"127.0.0.1:{port}", kind,
                             secret], input=text, capture_output=True, text=True, timeout=15)
    code, reply = None, {}
    for line in result.stdout.splitlines():
        if found := _RECEIVED.match(line):
            code = found[1]
        elif code and (found := _ATTRIBUTE.match(line)):
            reply[found[1]] = found[2].strip('"')
    return code, reply


class SourceProxy:
    """A TCP forwarder on 127.0.0.1 (port, default any free one) to target_port that connects
    from the loopback address source: callpass then sees a caller that is not in radius.clients
    (127.0.0.2), or callpass appears at a new address (127.0.0.1)."""

    def __init__(self, target_port, source="127.0.0.2", port=0):
        self.target_port, self.source = target_port, source
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.forwarded = 0  # connections made to the target from source
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._forward, args=(inside,), daemon=True).start()

    def _forward(self, inside):
        with inside, socket.create_connection(("127.0.0.1", self.target_port), timeout=10,
                                              source_address=(self.source, 0)) as outside:
            self.forwarded += 1
            back = threading.Thread(target=self._pump, args=(outside, inside))
            back.start()
            self._pump(inside, outside)
            back.join()

    @staticmethod
    def _pump(src, dst):
        """Copy src to dst until src ends, then pass the end on."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # a side went away: the connection is over

    def close(self):
        self.listener.close()
