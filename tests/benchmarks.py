"""Benchmarks for the figures the issues name. Run: `make bench` (or .venv/bin/python tests/benchmarks.py).

1. Time to online: a guest's phone form POST -> provider wait_call -> the call -> the provider's
   notification -> session open, over real HTTP on loopback (the SMSC simulator as the provider).
2. The phone form's first load: bytes transferred (HTML + the CSS/JS it links), per language.
3. Identification-log CSV export of ROWS rows (default 1,000,000): time, size and peak memory.
4. The call -> open firewall core (tests/bench_core.py), each beside its anchor from the same run:
   notification -> MAC in the real nft set (50 guests at once) beside one `nft add element`;
   complete guest flows per second (200 keep-alive guests) with the script firewall beside the
   no-op one; probe answers per second beside a minimal Flask + waitress app; `serve` with 10k
   open sessions: first /healthz and the set restored; GET / while 20 guests wait on a 10 s
   provider beside the same with nobody waiting.
5. The firewall script (tests/bench_firewall.py): allow/revoke with 100 and 100k MACs in the set,
   list with 100k, beside one `nft add element` and a bare `nft -j list set`.

Prints one line per figure. Uses only loopback, network namespaces it creates (root) and a
temporary folder.
"""

import argparse
import json
import logging
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from serve_support import write_arp
from sqlalchemy import insert
from werkzeug.serving import make_server

from portal import config as config_module
from portal import create_app, idlog, storage
from portal.firewall import NoopFirewall
from portal.simulator import SimulatorServer

TOKEN = "benchmark-callback-token-000000"
SECRET = "benchmark-secret"


def make_app(folder, simulator_url):
    arp = write_arp(folder / "arp", {"127.0.0.1": "02:cc:00:00:00:42"})
    cfg = config_module.load(None, environ={}, overrides={
        "portal": {"public_url": "http://localhost/", "secret_key": "b" * 32,
                   "database": f"sqlite:///{folder / 'bench.sqlite3'}", "neighbour_table": str(arp),
                   "limit_per_device": "10000 per minute", "limit_per_phone": "10000 per minute"},
        "provider": {"base_url": simulator_url, "fallback_urls": [], "apikey": "k"},
        "callback": {"token": TOKEN, "signature": "md5", "secret": SECRET},
        "gateway": {"firewall": "noop"},
    })
    app = create_app(cfg, firewall=NoopFirewall())
    storage.upgrade(app.extensions["callpass"].engine)
    return app


def time_to_online(folder, rounds):
    """Median and 95th percentile of form POST -> confirmed, in milliseconds."""
    simulator = SimulatorServer(callback_url="http://127.0.0.1:9/", secret=SECRET).start()
    app = make_app(folder, simulator.url)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://localhost:{server.server_port}"  # the portal's host (public_url)
    simulator.callback_url = f"{base}/callback/smsc/{TOKEN}"
    took = []
    try:
        with requests.Session() as http:
            for i in range(rounds):
                phone = f"+7916{i:07d}"
                start = time.perf_counter()
                form = http.post(base + "/", data={"phone": phone}, allow_redirects=False,
                                 timeout=10)
                assert form.status_code == 303, form.status_code
                token = form.headers["Location"].rsplit("/", 1)[-1]
                called = http.post(simulator.url + "/sim/call", data={"phone": phone[1:]}, timeout=10)
                assert called.json()["status"] == 200, called.text
                state = http.get(f"{base}/api/verifications/{token}", timeout=10).json()["state"]
                assert state == "confirmed", state
                took.append((time.perf_counter() - start) * 1000)
    finally:
        server.shutdown()
        server.server_close()
        simulator.stop()
        app.extensions["callpass"].engine.dispose()
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1]


def form_size(folder):
    """{language: bytes} of the phone form's first load: the page and the CSS/JS it links."""
    simulator = SimulatorServer(callback_url="http://127.0.0.1:9/").start()
    app = make_app(folder, simulator.url)
    sizes = {}
    try:
        client = app.test_client()
        for lang in ("ru", "uk", "en"):
            page = client.get("/", headers={"Accept-Language": lang})
            assert page.status_code == 200, page.status_code
            total = len(page.data) + sum(len(f"{k}: {v}\r\n") for k, v in page.headers.items())
            for link in re.findall(rb'(?:href|src)="(/static/[^"]+)"', page.data):
                asset = client.get(link.decode())
                total += len(asset.data) + sum(len(f"{k}: {v}\r\n") for k, v in asset.headers.items())
                asset.close()
            sizes[lang] = total
    finally:
        simulator.stop()
        app.extensions["callpass"].engine.dispose()
    return sizes


def export(folder, rows):
    """(seconds, bytes, peak RSS growth in MiB) of streaming a CSV export of `rows` sessions."""
    engine = storage.connect(f"sqlite:///{folder / 'export.sqlite3'}")
    storage.upgrade(engine)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    batch = 50_000
    for first in range(0, rows, batch):
        with engine.begin() as conn:
            conn.execute(insert(storage.access_session), [
                {"mac": f"02:cc:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                 "ip": "10.77.0.11", "phone": f"+7916{i:07d}",
                 "started_at": t0 + timedelta(seconds=i), "ends_at": t0 + timedelta(seconds=i + 3600),
                 "ended_at": t0 + timedelta(seconds=i + 3600), "end_reason": "expired"}
                for i in range(first, min(rows, first + batch))])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    size = 0
    for chunk in idlog.csv_chunks(engine):
        size += len(chunk.encode("utf-8"))
    seconds = time.perf_counter() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    engine.dispose()
    return seconds, size, growth


def main():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="guest flows to time (default 50)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to export (default 1e6)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callpass-bench-") as tmp:
        folder = Path(tmp)
        median, p95 = time_to_online(folder, args.rounds)
        print(f"time to online (form POST -> call -> notification -> session), {args.rounds} "
              f"guests over loopback HTTP: median {median:.1f} ms, p95 {p95:.1f} ms")
        sizes = form_size(folder)
        print("phone form first load (HTML + linked CSS/JS, with headers): "
              + ", ".join(f"{lang} {size / 1024:.1f} KB" for lang, size in sizes.items())
              + " (limit 30 KB)")
        core_figures(folder)
        chain_figures(folder)
        firewall_figures()
        seconds, size, growth = export(folder, args.rows)
        print(f"CSV export of {args.rows:,} rows: {size / 1e6:.1f} MB in {seconds:.1f} s "
              f"({args.rows / seconds:,.0f} rows/s), peak memory growth {growth:.1f} MiB")
    return 0


def figure(name, measure):
    """Run one benchmark; a failure is printed and the others go on."""
    try:
        measure()
    except Exception as exc:  # a benchmark that breaks must not hide the other figures
        print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
    sys.stdout.flush()


def core_figures(folder):
    import bench_core

    def notify():
        for spread, how in ((2.0, "their calls within 2 s"), (0.0, "all 50 calls at one instant")):
            p50, p99, single = bench_core.notification_to_set(folder, spread_seconds=spread)
            print(f"notification -> MAC in the nft set (script firewall, real nftables, 50 "
                  f"guests, {how}): p50 {p50:.1f} ms, p99 {p99:.1f} ms (bars 15 / 50 ms); "
                  f"anchor: one `nft add element` from the CLI {single:.1f} ms")

    def flows():
        (script, script_errors), (noop, noop_errors) = bench_core.flows_per_second(folder)
        print(f"complete guest flows, 200 keep-alive guests, simulator on this machine: script "
              f"firewall {script:.1f}/s ({script_errors} errors), no-op firewall {noop:.1f}/s "
              f"({noop_errors} errors), ratio {script / noop:.2f} (bars >= 100/s, >= 0.9, 0 errors)")

    def probes():
        ours, minimal = bench_core.probes_per_second(folder)
        print(f"probe answers (unverified guest, 302): callpass {ours:.0f}/s; anchor: minimal "
              f"Flask + waitress {minimal:.0f}/s; ratio {ours / minimal:.2f} (bar >= 1)")

    def start():
        healthz, restored = bench_core.start_with_sessions(folder)
        restored_text = f"{restored:.2f} s" if restored is not None else "not within 60 s"
        print(f"serve with 10,000 open sessions and an empty nft set: /healthz answers after "
              f"{healthz:.2f} s (bar 1.5 s), all MACs back in the set after {restored_text} "
              f"(bar 5 s)")

    def slow():
        busy, idle = bench_core.page_while_provider_slow(folder)
        print(f"GET / p99 while 20 guests wait on a 10 s provider: {busy:.0f} ms (bar 200 ms); "
              f"anchor: with nobody waiting {idle:.0f} ms")

    for name, measure in (("notification to set", notify), ("guest flows", flows),
                          ("probes", probes), ("start", start), ("slow provider", slow)):
        figure(name, measure)


def chain_figures(folder):
    import bench_chain

    def flows():
        results = bench_chain.flows_per_second(folder)
        (one, one_errors), (two, two_errors) = results[1], results[2]
        print(f"complete guest flows on PostgreSQL + Redis behind HAProxy, 200 keep-alive guests: "
              f"1 node {one:.1f}/s ({sum(one_errors.values())} errors), 2 nodes {two:.1f}/s "
              f"({sum(two_errors.values())} errors), ratio {two / one:.2f}")

    def old():
        empty, filled = bench_chain.flow_with_old_verifications(folder)
        print(f"one guest flow on PostgreSQL (1 node, median of 30, a MikroTik guest whose "
              f"venue is found by its router's identity): with 1,000 venues and 1,000,000 old "
              f"verifications {filled:.0f} ms; anchor: empty database {empty:.0f} ms; ratio "
              f"{filled / empty:.2f} (bar <= 1.5)")

    for name, measure in (("chain flows", flows), ("old verifications", old)):
        figure(name, measure)


def firewall_figures():
    import bench_firewall

    def run():
        figures = bench_firewall.measure(repeats=9, list_repeats=3)
        print("firewall script: " + json.dumps(figures))
        for line in bench_firewall.check_bars(figures):
            print("  " + str(line))

    figure("firewall script", run)


if __name__ == "__main__":
    sys.exit(main())
