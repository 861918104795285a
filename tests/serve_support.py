"""Run `callpass serve` as a real process on loopback, as an operator would, for the tests that
need the production server (waitress, the firewall worker, the maintenance thread)."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

TOKEN = "serve-test-token-0123456789"
SECRET = "serve-test-secret"
SECRET_KEY = "k" * 40  # portal.secret_key

# A stand-in firewall script with the real one's interface (apply on stdin, list as JSON) that
# keeps its set in a JSON file and fails or hangs on demand (the word in the file `mode`).
FAKE_SCRIPT = """#!{python}
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(here, "mode")).read().strip()
if mode == "fail":
    sys.exit("callpass-fw: nft failed: simulated failure")
if mode == "hang":
    time.sleep(300)
path = os.path.join(here, "set.json")
allowed = json.load(open(path)) if os.path.exists(path) else {{}}
now = time.time()
allowed = {{mac: end for mac, end in allowed.items() if end is None or end > now}}
verb = sys.argv[1]
if verb == "apply":
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "allow":
            allowed[words[1]] = now + int(words[2]) if len(words) > 2 else None
        elif words and words[0] == "revoke":
            allowed.pop(words[1], None)
elif verb == "list":
    print(json.dumps([{{"mac": mac, "seconds_left": None if end is None else int(end - now) + 1}}
                      for mac, end in allowed.items()]))
json.dump(allowed, open(path + ".tmp", "w"))
os.replace(path + ".tmp", path)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_script(folder, mode="ok"):
    """Write the stand-in firewall script into folder; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "callpass-fw"
    script.write_text(FAKE_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    (folder / "mode").write_text(mode)
    return script


def write_config(path, *, database, port=8080, provider_url="http://127.0.0.1:9",
                 firewall="script", script=None, arp=None, listen_host="127.0.0.1",
                 public_host="127.0.0.1", sections=None):
    """Write a complete, safe config file (for `serve` and the other commands); returns path.

    database is the database URL (the `database_url` fixture); script the firewall script (for firewall "script"); arp None
    reads the kernel's own neighbour table. sections adds keys and sections, e.g.
    {"portal": {"session_minutes": 30}, "radius": {...}}; its keys win over the ones here.
    """
    config = {
        "portal": {"listen": f"{listen_host}:{port}", "public_url": f"http://{public_host}:{port}/",
                   "secret_key": SECRET_KEY, "database": str(database),
                   "limit_per_device": "1000 per minute", "limit_per_phone": "1000 per minute"},
        "provider": {"base_url": provider_url, "fallback_urls": [], "login": "venue",
                     "password": "venue-password", "timeout_seconds": 20},
        "callback": {"token": TOKEN, "signature": "md5", "secret": SECRET},
        "gateway": {"firewall": firewall, "script_timeout_seconds": 2},
    }
    if arp:
        config["portal"]["neighbour_table"] = arp
    if script:
        config["gateway"]["script"] = script
    for section, keys in (sections or {}).items():
        config.setdefault(section, {}).update(keys)
    path.write_text("\n".join(f"[{section}]\n" + "".join(f"{key} = {toml_value(value)}\n"
                                                        for key, value in keys.items())
                              for section, keys in config.items()))
    return path


def toml_value(value):
    """value (a string or path, number, bool or list of them) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def write_arp(path, entries):
    """A /proc/net/arp-format file: {ip: mac}, all on br-lan; returns path."""
    Path(path).write_text("IP address       HW type     Flags       HW address            Mask     "
                          "Device\n" + "".join(arp_line(ip, mac) for ip, mac in entries.items()))
    return path


def arp_line(ip, mac, device="br-lan"):
    """One neighbour in /proc/net/arp format."""
    return f"{ip:<16} 0x1         0x2         {mac}     *        {device}\n"


class ServeProcess:
    """`python -m portal serve --config FILE`, started and stopped (or killed) by the test."""

    def __init__(self, config, log_path):
        self.config, self.log_path = config, log_path
        self.process = None

    def start(self, port, wait=True):
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "portal", "serve",
                                         "--config", str(self.config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    return self
                except requests.ConnectionError:
                    if self.process.poll() is not None:
                        break
                    time.sleep(0.05)
            raise AssertionError("serve did not start:\n" + Path(self.log_path).read_text())
        return self

    def kill(self):
        """kill -9: no clean-up of any kind."""
        self.process.kill()
        self.process.wait(10)
        self.log.close()

    def stop(self):
        stop_process(self.process)
        self.log.close()


def stop_process(process):
    """Terminate a test's child process (kill it when it takes more than 10 s); None is fine."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def provider_for(port):
    """The real simulator as the provider of a `serve` on port (login venue / venue-password),
    started; notifications go to that portal's handler URL. The caller stops it."""
    from portal.simulator import SimulatorServer

    return SimulatorServer(callback_url=f"http://127.0.0.1:{port}/callback/smsc/{TOKEN}",
                           secret=SECRET, signature="md5",
                           login="venue", password="venue-password").start()
