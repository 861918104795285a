"""Benchmarks of a chain on PostgreSQL and Redis (issue "a chain of venues"): complete guest flows
per second with 1 node and with 2 nodes behind the example HAProxy, in the same run; and the time
of one flow (a MikroTik guest, its venue found by the router's identity) with 1,000 venues and
1,000,000 old verifications in the database beside an empty one. Starts its own
PostgreSQL, Redis and HAProxy on loopback. tests/benchmarks.py runs it; alone:
`.venv/bin/python tests/bench_chain.py`.
"""

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from bench_core import flows, guests, wait_http
from chain_support import device, start_haproxy
from databases import PostgresServer, RedisServer
from serve_support import (SECRET, TOKEN, ServeProcess, free_port, stop_process, write_arp,
                           write_config)
from sqlalchemy import text

from portal import storage


class Chain:
    """`nodes` serve processes on one database and Redis behind HAProxy; the simulator as the
    provider, notifying through HAProxy."""

    def __init__(self, folder, database, redis_url, entries, nodes, firewall="noop"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port, self.sim_port = free_port(), free_port()
        self.node_ports = [free_port() for _ in range(nodes)]
        arp = write_arp(self.folder / "arp", entries)
        self.configs = [write_config(
            self.folder / f"node{n}.toml", port=port, database=database, firewall=firewall,
            provider_url=f"http://127.0.0.1:{self.sim_port}", arp=arp,
            sections={"portal": {"ratelimit_storage": redis_url, "trusted_proxy": "127.0.0.1"},
                      "radius": {"token": "bench-radius-token-0123456789",
                                 "clients": ["127.0.0.1/32"], "secret": "bench-radius-secret"}})
            for n, port in enumerate(self.node_ports)]

    def __enter__(self):
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "portal", "simulator", "--port", str(self.sim_port),
             "--callback-url", f"http://127.0.0.1:{self.port}/callback/smsc/{TOKEN}",
             "--secret", SECRET, "--login", "venue", "--password", "venue-password"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.sim_port}/sim/")
        self.nodes = [ServeProcess(config, self.folder / f"node{n}.log").start(port)
                      for n, (config, port) in enumerate(zip(self.configs, self.node_ports))]
        self.balancer = start_haproxy(self.folder, self.port, self.node_ports)
        return self

    def __exit__(self, *exc):
        stop_process(self.balancer)
        for node in self.nodes:
            node.stop()
        self.sim.terminate()
        self.sim.wait(10)


def flows_per_second(folder, count=200, seconds=20):
    """{nodes: (flows/s, errors)} for 1 and 2 nodes, each on a fresh PostgreSQL database."""
    postgres, redis = PostgresServer(), RedisServer()
    try:
        entries = guests(count, third=3)
        results = {}
        for nodes in (1, 2):
            with Chain(Path(folder) / f"chain{nodes}", postgres.new_database(), redis.url(),
                       entries, nodes) as chain:
                results[nodes] = asyncio.run(flows(chain, entries, seconds))
        return results
    finally:
        postgres.stop()
        redis.stop()


def flow_time(chain, ip, phone, identity=None):
    """Seconds from the phone form to "online" for one guest through the chain; with identity,
    a MikroTik guest arriving through the hotspot of that identity first."""
    http = device(ip)
    url = f"http://127.0.0.1:{chain.port}"
    started = time.perf_counter()
    if identity is not None:
        mac = "02:ab:00:%02x:%02x:%02x" % tuple(int(part) for part in ip.split(".")[1:])
        arrived = http.post(url + "/mikrotik", allow_redirects=False, timeout=30, data={
            "mac": mac, "ip": "10.5.50.10", "link-login-only": "http://10.5.50.1/login",
            "identity": identity})
        assert arrived.status_code == 303, arrived.text
    form = http.post(url + "/", data={"phone": phone}, allow_redirects=False, timeout=30)
    assert form.status_code == 303, form.text
    token = form.headers["Location"].rsplit("/", 1)[-1]
    requests.post(f"http://127.0.0.1:{chain.sim_port}/sim/call",
                  data={"phone": phone.lstrip("+")}, timeout=30)
    while http.get(f"{url}/api/verifications/{token}", timeout=10).json().get("access") != "online":
        time.sleep(0.01)
    return time.perf_counter() - started


def flow_with_old_verifications(folder, old=1_000_000, venues=1_000, flows_timed=30):
    """(median ms of a flow on an empty database, the same with `venues` venues and `old` old
    verifications and their sessions spread over them), one node on PostgreSQL; each flow a
    MikroTik guest of venue MT-500 (of the main venue on the empty database, which has no other)."""
    postgres, redis = PostgresServer(), RedisServer()
    try:
        entries = guests(flows_timed, third=4)
        medians = []
        for filled in (False, True):
            database = postgres.new_database()
            engine = storage.connect(database)
            storage.upgrade(engine)
            if filled:
                fill(engine, old, venues)
            engine.dispose()
            with Chain(Path(folder) / f"old{filled}", database, redis.url(), entries, 1,
                       firewall="radius") as chain:
                times = [flow_time(chain, ip, f"+7926{filled:d}{n:06d}", identity="MT-500")
                         for n, ip in enumerate(entries)]
            medians.append(statistics.median(times) * 1000)
        return medians
    finally:
        postgres.stop()
        redis.stop()


def fill(engine, count, venues):
    """`venues` venues (the main one and MikroTik hotspots MT-2 … MT-<venues>), and count
    verifications of the last months spread over them (expired, failed, confirmed with ended
    sessions), in a few SQL statements on the server."""
    with storage.begin(engine) as conn:
        conn.exec_driver_sql("""
            INSERT INTO venue (slug, name, nas_identifier, created_at)
            SELECT 'venue-' || n, 'Venue ' || n, 'MT-' || n, now() AT TIME ZONE 'UTC'
            FROM generate_series(2, %(venues)s) AS n""", {"venues": venues})
        conn.exec_driver_sql("""
            INSERT INTO verification (token, phone, mac, ip, call_number, state, created_at,
                                      expires_at, confirmed_at, venue_id)
            SELECT 'old' || n, '+7916' || lpad((n %% 9000000)::text, 7, '0'),
                   '02:ee:' || lpad(to_hex((n >> 16) & 255), 2, '0') || ':'
                            || lpad(to_hex((n >> 8) & 255), 2, '0') || ':'
                            || lpad(to_hex(n & 255), 2, '0') || ':00',
                   '10.77.0.11', '+79001112233',
                   (ARRAY['expired', 'failed', 'confirmed'])[n %% 3 + 1],
                   now() AT TIME ZONE 'UTC' - (n || ' seconds')::interval * 10,
                   now() AT TIME ZONE 'UTC' - (n || ' seconds')::interval * 10 + interval '5 minutes',
                   CASE WHEN n %% 3 = 2 THEN now() AT TIME ZONE 'UTC' - (n || ' seconds')::interval * 10 END,
                   n %% %(venues)s + 1
            FROM generate_series(1, %(count)s) AS n""", {"count": count, "venues": venues})
        conn.execute(text("""
            INSERT INTO access_session (verification_id, mac, ip, phone, started_at, ends_at,
                                        ended_at, end_reason, firewall_at, venue_id)
            SELECT id, mac, ip, phone, confirmed_at, confirmed_at + interval '4 hours',
                   confirmed_at + interval '4 hours', 'expired', confirmed_at, venue_id
            FROM verification WHERE state = 'confirmed'"""))
        conn.execute(text("ANALYZE"))


def main():
    with tempfile.TemporaryDirectory(prefix="callpass-bench-chain-") as tmp:
        print("flows/s and errors by node count:", flows_per_second(tmp))
        print("median ms of a flow, empty and with 1,000 venues and 1M old verifications:",
              flow_with_old_verifications(tmp))


if __name__ == "__main__":
    main()
