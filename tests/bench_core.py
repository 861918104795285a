"""Benchmarks of the call -> open firewall core (issue "nothing lost, nothing doubled, nothing
waits"), each printed beside its anchor measured in the same run. Uses loopback and one network
namespace (real nftables); needs root. tests/benchmarks.py runs them; alone:
`.venv/bin/python tests/bench_core.py`.
"""

import asyncio
import collections
import hashlib
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import requests
from loadgen import Connection, requests_per_second
from netns import Namespace
from serve_support import SECRET, TOKEN, ServeProcess, free_port, write_arp, write_config
from sqlalchemy import insert

from portal import storage

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "callpass-fw"

MINIMAL_APP = """
import sys
import waitress
from flask import Flask, redirect
app = Flask(__name__)
@app.route("/generate_204")
def probe():
    return redirect("http://127.0.0.1/", code=302)
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=32, connection_limit=1000,
               asyncore_use_poll=True)
"""


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def guests(count, third=1):
    return {f"127.{third}.{i // 250}.{i % 250 + 1}": f"02:cd:{third:02x}:00:{i >> 8:02x}:{i & 255:02x}"
            for i in range(count)}


def wait_http(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=2, allow_redirects=False)
        except requests.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer")


class Stack:
    """serve + the simulator as a process, on loopback; the firewall script optional (namespace)."""

    def __init__(self, folder, arp_entries, script=None, noop=False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port, self.sim_port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.config = write_config(
            self.folder / "callpass.toml", port=self.port,
            database=f"sqlite:///{self.folder / 'db.sqlite3'}",
            provider_url=self.sim_url, arp=write_arp(self.folder / "arp", arp_entries),
            firewall="noop" if noop else "script", script=script or "/bin/false")
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "portal", "simulator", "--port", str(self.sim_port),
             "--callback-url", f"{self.url}/callback/smsc/{TOKEN}", "--secret", SECRET,
             "--login", "venue", "--password", "venue-password"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.sim_url + "/sim/")
        self.serve = ServeProcess(self.config, self.folder / "serve.log").start(self.port)
        return self

    def __exit__(self, *exc):
        self.serve.stop()
        self.sim.terminate()
        self.sim.wait(10)


def signed(phone_digits):
    ts = int(time.time())
    return {"waitcall": "1", "phone": phone_digits, "ts": str(ts),
            "md5": hashlib.md5(f"{phone_digits}:{ts}:{SECRET}".encode()).hexdigest()}


def in_gateway(measure, **kwargs):
    """Run measure(**kwargs) inside a fresh network namespace that plays the gateway (a LAN
    bridge, `callpass-fw up` done), as `serve`, the simulator and the guests' traffic would run
    on a real one: the firewall script is called directly, not through `ip netns exec`. Returns
    what measure returned (JSON)."""
    with Namespace("bench-gw") as ns:
        ns.run("ip", "link", "add", "lan0", "type", "bridge", check=True)
        ns.run("ip", "link", "set", "lan0", "up", check=True)
        ns.run(str(SCRIPT), "up", "--lan", "lan0", "--portal-port", "8080", check=True)
        done = ns.run(sys.executable, __file__, "--inside", measure.__name__, json.dumps(kwargs),
                      timeout=600, cwd=str(ROOT))
        if done.returncode != 0:
            raise RuntimeError(f"{measure.__name__} in the namespace failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


# --- 1. notification -> MAC in the kernel set ---------------------------------------------------

def notification_to_set(folder, count=50, spread_seconds=2.0):
    """(p50, p99) ms from sending the notification to the MAC appearing in the nft set (nft
    monitor) for `count` waiting guests whose calls arrive within `spread_seconds` (0: all at the
    same instant); and the nft CLI single-add time (ms), the anchor. In a gateway namespace."""
    return in_gateway(notification_to_set_here, folder=str(folder), count=count,
                      spread_seconds=spread_seconds)


def notification_to_set_here(folder, count, spread_seconds):
    entries = guests(count)
    with Stack(Path(folder) / f"notify-{spread_seconds}", entries, script=SCRIPT) as stack:
        phones = {}
        for i, (ip, mac) in enumerate(entries.items()):
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30,
                                              source_address=(ip, 0))
            phone = f"7916777{i:04d}"
            conn.request("POST", "/", body=urlencode({"phone": "+" + phone}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert conn.getresponse().status == 303
            conn.close()
            phones[mac] = phone
        seen = {}
        monitor = subprocess.Popen(["nft", "monitor", "elements"], stdout=subprocess.PIPE,
                                   text=True)

        def read_monitor():
            for line in monitor.stdout:
                if "element inet callpass allowed" in line and "delete" not in line:
                    now = time.perf_counter()
                    for mac in phones:
                        if mac in line and mac not in seen:
                            seen[mac] = now

        threading.Thread(target=read_monitor, daemon=True).start()
        time.sleep(0.5)
        sent = {}
        barrier = threading.Barrier(count)
        rng = random.Random(1)
        delays = {mac: rng.uniform(0, spread_seconds) for mac in phones}

        def notify(mac):
            # http.client, not requests: the time starts as the provider opens its connection,
            # and requests' own preparation (2 ms here, with 50 threads) is not the portal's.
            body = urlencode(signed(phones[mac]))
            barrier.wait()
            time.sleep(delays[mac])
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
            sent[mac] = time.perf_counter()
            conn.request("POST", f"/callback/smsc/{TOKEN}", body=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert conn.getresponse().status == 200
            conn.close()

        threads = [threading.Thread(target=notify, args=(mac,)) for mac in phones]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        deadline = time.monotonic() + 10
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        monitor.terminate()
        took = [(seen[mac] - sent[mac]) * 1000 for mac in phones if mac in seen]
        assert len(took) == count, f"only {len(took)} of {count} MACs reached the set"
    single = []
    for i in range(15):
        started = time.perf_counter()
        subprocess.run(["nft", "add", "element", "inet", "callpass", "allowed",
                        f"{{ 02:ee:00:00:00:{i:02x} timeout 60s }}"], check=True)
        single.append((time.perf_counter() - started) * 1000)
    return percentile(took, 50), percentile(took, 99), statistics.median(single)


# --- 2. complete guest flows per second -------------------------------------------------------

async def flows(stack, entries, seconds):
    """Complete guest flows (form -> call -> online) in `seconds`, 200 keep-alive guests."""
    done, errors = [0], collections.Counter()
    deadline = time.perf_counter() + seconds
    counter = [0]

    async def guest(ip):
        portal = Connection("127.0.0.1", stack.port, ip)
        sim = Connection("127.0.0.1", stack.sim_port)
        while time.perf_counter() < deadline:
            counter[0] += 1
            phone = f"79{counter[0]:09d}"
            try:
                status, headers, _ = await portal.request(
                    "POST", "/", {"Content-Type": "application/x-www-form-urlencoded"},
                    urlencode({"phone": "+" + phone}).encode())
                if status != 303:
                    raise ValueError(f"form {status}")
                token = headers["location"].rsplit("/", 1)[-1]
                status, _, body = await sim.request(
                    "POST", "/sim/call", {"Content-Type": "application/x-www-form-urlencoded"},
                    urlencode({"phone": phone}).encode())
                if json.loads(body).get("status") != 200:
                    raise ValueError(f"call {body[:100]}")
                # As the wait page does: look at once when back from the dialler, then every
                # half second while "connecting".
                while True:
                    status, _, body = await portal.request("GET", f"/api/verifications/{token}")
                    if json.loads(body).get("access") == "online":
                        break
                    await asyncio.sleep(0.5)
                if time.perf_counter() <= deadline:
                    done[0] += 1
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
                errors[str(exc)[:60] or type(exc).__name__] += 1
                portal.close()
                sim.close()
                await asyncio.sleep(0.05)
        portal.close()
        sim.close()

    await asyncio.gather(*(guest(ip) for ip in entries))
    return done[0] / seconds, errors


def flows_per_second(folder, count=200, seconds=20):
    """((script flows/s, errors), (noop flows/s, errors)); errors count by reason. Both in a
    gateway namespace, the script one against its real nftables."""
    return in_gateway(flows_per_second_here, folder=str(folder), count=count, seconds=seconds)


def flows_per_second_here(folder, count, seconds):
    entries = guests(count, third=2)
    results = []
    for name, kwargs in (("script", dict(script=SCRIPT)), ("noop", dict(noop=True))):
        with Stack(Path(folder) / f"flows-{name}", entries, **kwargs) as stack:
            results.append(asyncio.run(flows(stack, entries, seconds)))
    return results


# --- 3. probe answers per second --------------------------------------------------------------

def probes_per_second(folder, seconds=5):
    """(callpass probe answers/s, minimal Flask + waitress answers/s), alternated twice."""
    minimal_port = free_port()
    minimal = subprocess.Popen([sys.executable, "-c", MINIMAL_APP, str(minimal_port)])
    try:
        with Stack(Path(folder) / "probes", {"127.0.0.1": "02:cc:00:00:00:42"}, noop=True) as stack:
            wait_http(f"http://127.0.0.1:{minimal_port}/generate_204")
            ours, theirs = [], []
            headers = {"Host": "connectivitycheck.gstatic.com"}
            for _ in range(2):
                theirs.append(requests_per_second("127.0.0.1", minimal_port, "/generate_204",
                                                  20, seconds, headers)[0])
                ours.append(requests_per_second("127.0.0.1", stack.port, "/generate_204",
                                                20, seconds, headers)[0])
        return statistics.mean(ours), statistics.mean(theirs)
    finally:
        minimal.terminate()
        minimal.wait(10)


# --- 4. start with 10k open sessions ----------------------------------------------------------

def start_with_sessions(folder, count=10_000):
    """(seconds to the first /healthz answer, seconds until all MACs are back in the nft set),
    `serve` started with `count` open sessions and an empty set, in a gateway namespace."""
    return in_gateway(start_with_sessions_here, folder=str(folder), count=count)


def start_with_sessions_here(folder, count):
    stack = Stack(Path(folder) / "start", {"127.0.0.1": "02:cc:00:00:00:42"}, script=SCRIPT)
    engine = storage.connect(f"sqlite:///{stack.folder / 'db.sqlite3'}")
    storage.upgrade(engine)
    now = storage.utcnow()
    with storage.begin(engine) as conn:
        conn.execute(insert(storage.access_session), [
            {"mac": f"02:dd:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
             "ip": "10.77.0.11", "phone": f"+7916{i:07d}", "started_at": now,
             "ends_at": now + timedelta(hours=4), "firewall_at": now} for i in range(count)])
    engine.dispose()
    serve = ServeProcess(stack.config, stack.folder / "serve.log")
    started = time.perf_counter()
    serve.start(stack.port, wait=False)
    try:
        wait_http(stack.url + "/healthz")
        healthz = time.perf_counter() - started
        restored = None
        while time.perf_counter() - started < 60:
            listing = subprocess.run([str(SCRIPT), "list"], capture_output=True, text=True,
                                     timeout=30)
            if listing.returncode == 0 and len(json.loads(listing.stdout)) >= count:
                restored = time.perf_counter() - started
                break
            time.sleep(0.1)
        return healthz, restored
    finally:
        serve.stop()


# --- 5. GET / while 20 guests wait on a slow provider -----------------------------------------

def page_while_provider_slow(folder, waiting=20, latency=10.0, samples=40):
    """(p99 ms of GET / from one guest while `waiting` guests wait on a provider taking
    `latency` s, p99 ms of the same with nobody waiting)."""
    entries = guests(waiting + 1, third=3)
    with Stack(Path(folder) / "slow", entries, noop=True) as stack:
        def sample():
            took = []
            with requests.Session() as http:
                for _ in range(samples):
                    started = time.perf_counter()
                    assert http.get(stack.url + "/", timeout=30).status_code == 200
                    took.append((time.perf_counter() - started) * 1000)
            return percentile(took, 99)

        idle = sample()
        requests.post(stack.sim_url + "/sim/knobs", data={"latency": str(latency)}, timeout=5)
        def slow_guest(ip, i):
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60,
                                              source_address=(ip, 0))
            conn.request("POST", "/", body=urlencode({"phone": f"+7916888{i:04d}"}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            conn.getresponse().read()
            conn.close()

        ips = list(entries)[1:]
        threads = [threading.Thread(target=slow_guest, args=(ip, i)) for i, ip in enumerate(ips)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        busy = sample()
        for thread in threads:
            thread.join(60)
        return busy, idle


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--inside":
        # in_gateway's other half: run one measurement here and print its result as JSON.
        measure = globals()[sys.argv[2]]
        print(json.dumps(measure(**json.loads(sys.argv[3]))))
        return
    with tempfile.TemporaryDirectory(prefix="callpass-bench-core-") as tmp:
        for spread in (2.0, 0.0):
            p50, p99, single = notification_to_set(tmp, spread_seconds=spread)
            print(f"notification -> MAC in the nft set, 50 guests, calls within {spread:g} s: "
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; anchor: one `nft add element` from "
                  f"the CLI {single:.1f} ms")


if __name__ == "__main__":
    main()
