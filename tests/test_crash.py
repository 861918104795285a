"""kill -9 at any moment loses nothing: after a restart every confirmed verification has its
session, every session its verification and its accepted notification, and the real nftables set
matches the database. `callpass serve` runs as a process with the real firewall script (made slow
on purpose) against nftables in a network namespace."""

import http.client
import json
import random
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from conftest import wait_until
from netns import Namespace, requirements_missing
from serve_support import SECRET, TOKEN, ServeProcess, free_port, write_arp, write_config
from sqlalchemy import select

from portal import storage
from portal.simulator import SimulatorServer

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "callpass-fw"
GUESTS = {f"127.0.1.{i}": f"02:cc:00:00:02:{i:02x}" for i in range(1, 41)}


def phone_of(ip):
    return f"+7916555{int(ip.rsplit('.', 1)[1]):04d}"


@pytest.fixture
def gateway(tmp_path):
    """A namespace with `callpass-fw up` done, and a script that runs the real one there, slowly."""
    if reason := requirements_missing():
        pytest.skip(reason)
    with Namespace("crash") as ns:
        ns.run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", check=True)
        ns.run("ip", "link", "set", "lan0", "up", check=True)
        up = ns.run(SCRIPT, "up", "--lan", "lan0", "--portal-port", "8080")
        assert up.returncode == 0, up.stderr
        slow = tmp_path / "slow-callpass-fw"
        slow.write_text(f"#!/bin/sh\nsleep 0.3\nexec ip netns exec {ns.name} {SCRIPT} \"$@\"\n")
        slow.chmod(0o755)
        ns.script = slow
        yield ns


def post_form(port, ip):
    """The guest at ip posts its phone number; True when it got a number to call."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(ip, 0))
    try:
        conn.request("POST", "/", body=urlencode({"phone": phone_of(ip)}),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return conn.getresponse().status == 303
    except OSError:
        return False
    finally:
        conn.close()


def place_call(simulator, ip):
    """The provider's notification for ip's phone; True when the portal answered 200."""
    try:
        answer = requests.post(simulator.url + "/sim/call",
                               data={"phone": phone_of(ip).lstrip("+")}, timeout=10)
        return answer.json().get("status") == 200
    except (requests.RequestException, ValueError):
        return False


def test_kill_9_at_any_moment_loses_and_doubles_nothing(gateway, tmp_path, database_url):
    port = free_port()
    simulator = SimulatorServer(callback_url=f"http://127.0.0.1:{port}/callback/smsc/{TOKEN}",
                                secret=SECRET, signature="md5",
                                login="venue", password="venue-password").start()
    config = write_config(tmp_path / "callpass.toml", port=port, database=database_url,
                          provider_url=simulator.url, arp=write_arp(tmp_path / "arp", GUESTS),
                          script=gateway.script)
    serve = ServeProcess(config, tmp_path / "serve.log")
    asked, called = set(), set()
    rng = random.Random(7)
    ips = list(GUESTS)
    try:
        for round_number in range(6):
            serve.start(port)
            burst = ips[round_number * 6:(round_number + 1) * 6]
            # Calls the provider owes from earlier rounds are delivered again, as it would.
            owed = sorted(asked - called)
            threads = []

            def guest(ip, owed_call=False):
                if owed_call or post_form(port, ip):
                    asked.add(ip)
                    if place_call(simulator, ip):
                        called.add(ip)

            threads = [threading.Thread(target=guest, args=(ip,)) for ip in burst]
            threads += [threading.Thread(target=guest, args=(ip, True)) for ip in owed]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.05, 1.2))  # often while the slow script runs
            serve.kill()
            for thread in threads:
                thread.join(15)

        serve.start(port)
        for ip in sorted(asked - called):  # the provider's last retries
            assert wait_until(lambda: place_call(simulator, ip), seconds=10)
            called.add(ip)

        def firewall_macs():
            done = gateway.run(str(SCRIPT), "list")
            assert done.returncode == 0, done.stderr
            return {entry["mac"] for entry in json.loads(done.stdout)}

        engine = storage.connect(database_url)
        with engine.connect() as conn:
            confirmed = conn.execute(select(storage.verification).where(
                storage.verification.c.state == "confirmed")).all()
            sessions_ = conn.execute(select(storage.access_session)).all()
            accepted = conn.execute(select(storage.notification.c.phone).where(
                storage.notification.c.verdict == "accepted")).scalars().all()
        engine.dispose()

        assert called and {row.mac for row in confirmed} == {GUESTS[ip] for ip in called}
        by_verification = {s.verification_id: s for s in sessions_}
        assert all(row.id in by_verification for row in confirmed)       # none without session
        assert len(sessions_) == len(confirmed)                           # none doubled
        assert all(s.verification_id in {row.id for row in confirmed} for s in sessions_)
        assert sorted(accepted) == sorted(phone_of(ip) for ip in called)  # one accepted per call
        live = {s.mac for s in sessions_ if s.ended_at is None}
        assert wait_until(lambda: firewall_macs() == live, seconds=20), (firewall_macs(), live)
        assert wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                          .json()["firewall"] | {"failing_since": None} == {
                              "backend": "script", "ok": True, "error": None,
                              "failing_since": None, "pending": 0, "recreated_at": None},
                          seconds=10)
    finally:
        serve.stop()
        simulator.stop()
