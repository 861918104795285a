"""Benchmarks of the call -> open firewall core (issue "nothing lost, nothing doubled, nothing
waits"), each printed beside its anchor measured in the same run. Uses loopback and one network
namespace (real nftables); needs root. tests/benchmarks.py runs them; alone:
`.venv/bin/python tests/bench_core.py`.
"""

import asyncio
import hashlib
import json
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
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer")


class Stack:
    """serve + the simulator as a process, on loopback; the firewall script optional (namespace)."""

    def __init__(self, folder, arp_entries, script=None, noop=False, extra=""):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port, self.sim_port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.config = write_config(
            self.folder / "callpass.toml", port=self.port, database=self.folder / "db.sqlite3",
            provider_url=self.sim_url, arp=write_arp(self.folder / "arp", arp_entries),
            script=script or "/bin/false", extra=extra)
        if noop:
            text = self.config.read_text().replace('firewall = "script"', 'firewall = "noop"')
            self.config.write_text(text)
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


def namespace_script(ns, folder):
    """A script path that runs the real callpass-fw inside ns."""
    path = Path(folder) / "ns-callpass-fw"
    path.write_text(f"#!/bin/sh\nexec ip netns exec {ns.name} {SCRIPT} \"$@\"\n")
    path.chmod(0o755)
    return path


def gateway_namespace(name):
    ns = Namespace(name)
    ns.run("ip", "link", "add", "lan0", "type", "bridge", check=True)
    ns.run("ip", "link", "set", "lan0", "up", check=True)
    ns.run(str(SCRIPT), "up", "--lan", "lan0", "--portal-port", "8080", check=True)
    return ns


# --- 1. notification -> MAC in the kernel set ---------------------------------------------------

def notification_to_set(folder, count=50):
    """(p50, p99) ms from sending the notification to the MAC appearing in the nft set (nft
    monitor), `count` guests notified at once; and the nft CLI single-add time (ms)."""
    entries = guests(count)
    ns = gateway_namespace("bench-notify")
    try:
        script = namespace_script(ns, folder)
        with Stack(Path(folder) / "notify", entries, script=script) as stack:
            phones = {}
            for i, (ip, mac) in enumerate(entries.items()):
                import http.client
                conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30,
                                                  source_address=(ip, 0))
                phone = f"7916777{i:04d}"
                conn.request("POST", "/", body=urlencode({"phone": "+" + phone}),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
                assert conn.getresponse().status == 303
                conn.close()
                phones[mac] = phone
            seen = {}
            monitor = ns.popen("nft", "monitor", "elements", stdout=subprocess.PIPE, text=True)

            def read_monitor():
                for line in monitor.stdout:
                    if "add element inet callpass allowed" in line:
                        now = time.perf_counter()
                        for mac in phones:
                            if mac in line and mac not in seen:
                                seen[mac] = now

            threading.Thread(target=read_monitor, daemon=True).start()
            time.sleep(0.5)
            sent = {}
            barrier = threading.Barrier(count)

            def notify(mac):
                with requests.Session() as http:
                    barrier.wait()
                    sent[mac] = time.perf_counter()
                    assert http.post(f"{stack.url}/callback/smsc/{TOKEN}",
                                     data=signed(phones[mac]), timeout=30).status_code == 200

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
            ns.run("nft", "add", "element", "inet", "callpass", "allowed",
                   f"{{ 02:ee:00:00:00:{i:02x} timeout 60s }}", check=True)
            single.append((time.perf_counter() - started) * 1000)
        return percentile(took, 50), percentile(took, 99), statistics.median(single)
    finally:
        ns.close()


# --- 2. complete guest flows per second -------------------------------------------------------

async def flows(stack, entries, seconds):
    """Complete guest flows (form -> call -> online) in `seconds`, 200 keep-alive guests."""
    done, errors = [0], [0]
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
                while True:
                    status, _, body = await portal.request("GET", f"/api/verifications/{token}")
                    if json.loads(body).get("access") == "online":
                        break
                    await asyncio.sleep(0.02)
                if time.perf_counter() <= deadline:
                    done[0] += 1
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError):
                errors[0] += 1
                portal.close()
                sim.close()
                await asyncio.sleep(0.05)
        portal.close()
        sim.close()

    await asyncio.gather(*(guest(ip) for ip in entries))
    return done[0] / seconds, errors[0]


def flows_per_second(folder, count=200, seconds=10):
    """((script flows/s, errors), (noop flows/s, errors))."""
    entries = guests(count, third=2)
    results = {}
    ns = gateway_namespace("bench-flows")
    try:
        script = namespace_script(ns, folder)
        for name, kwargs in (("script", dict(script=script)), ("noop", dict(noop=True))):
            with Stack(Path(folder) / f"flows-{name}", entries, **kwargs) as stack:
                results[name] = asyncio.run(flows(stack, entries, seconds))
    finally:
        ns.close()
    return results["script"], results["noop"]


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
    """(seconds to the first /healthz answer, seconds until all MACs are back in the nft set)."""
    folder = Path(folder) / "start"
    ns = gateway_namespace("bench-start")
    try:
        script = namespace_script(ns, folder.parent)
        stack = Stack(folder, {"127.0.0.1": "02:cc:00:00:00:42"}, script=script)
        engine = storage.connect(f"sqlite:///{stack.folder / 'db.sqlite3'}")
        storage.upgrade(engine)
        now = storage.utcnow()
        with storage.begin(engine) as conn:
            conn.execute(insert(storage.access_session), [
                {"mac": f"02:dd:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                 "ip": "10.77.0.11", "phone": f"+7916{i:07d}", "started_at": now,
                 "ends_at": now + timedelta(hours=4), "firewall_at": now} for i in range(count)])
        engine.dispose()
        sim = subprocess.Popen([sys.executable, "-m", "portal", "simulator", "--port",
                                str(stack.sim_port), "--callback-url", "http://127.0.0.1:9/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        serve = ServeProcess(stack.config, stack.folder / "serve.log")
        started = time.perf_counter()
        serve.start(stack.port, wait=False)
        try:
            wait_http(stack.url + "/healthz")
            healthz = time.perf_counter() - started
            restored = None
            while time.perf_counter() - started < 60:
                listing = ns.run(str(SCRIPT), "list", timeout=30)
                if listing.returncode == 0 and len(json.loads(listing.stdout)) >= count:
                    restored = time.perf_counter() - started
                    break
                time.sleep(0.1)
            return healthz, restored
        finally:
            serve.stop()
            sim.terminate()
            sim.wait(10)
    finally:
        ns.close()


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
        import http.client

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
    with tempfile.TemporaryDirectory(prefix="callpass-bench-core-") as tmp:
        p50, p99, single = notification_to_set(tmp)
        print(f"notification -> MAC in the nft set, 50 guests at once: p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms (bars 15 / 50 ms); anchor: one `nft add element` from the "
              f"CLI {single:.1f} ms")


if __name__ == "__main__":
    main()
