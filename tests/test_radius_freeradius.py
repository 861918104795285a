"""Real FreeRADIUS in front of a real `callpass serve`: deploy/freeradius/ applied over a copy of
the stock Debian config as its README says, on loopback ports, with `radclient` as the router.
Guests are verified the way they are in production: the phone form from their own address (a
neighbour-table entry gives the MAC), then the simulator places the call."""

import csv
import io
import hashlib
import http.client
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import requests
from conftest import wait_until
from radius_support import SECRET as RADIUS_SECRET
from radius_support import FreeRadius, SourceProxy, free_udp_port
from serve_support import (SECRET, SECRET_KEY, TOKEN, ServeProcess, fake_script, free_port,
                           write_arp, write_config)
from sqlalchemy import select

from portal import radius, sessions, storage
from portal.simulator import SimulatorServer

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/sbin/freeradius") or not os.path.exists("/usr/bin/radclient"),
    reason="needs the Debian packages freeradius, freeradius-rest and freeradius-utils "
           "(deploy/install-system-packages --tests)")

RADIUS_TOKEN = "freeradius-test-token-0123456789"
ADMIN_PASSWORD = "correct horse battery"
# Each guest has its own loopback address, which the neighbour table maps to its MAC.
GUESTS = {
    "accepted": ("127.0.0.11", "02:aa:00:00:00:11", "+79161110011"),
    "ended": ("127.0.0.12", "02:aa:00:00:00:12", "+79161110012"),
    "spelled": ("127.0.0.13", "02:aa:00:00:00:13", "+79161110013"),
    "chap": ("127.0.0.14", "02:aa:00:00:00:14", "+79161110014"),
    "accounted": ("127.0.0.15", "02:aa:00:00:00:15", "+79161110015"),
    "outsider": ("127.0.0.16", "02:aa:00:00:00:16", "+79161110016"),
}


class Venue:
    """callpass serve + the SMSC simulator + FreeRADIUS, as one venue runs them."""

    def __init__(self, folder, database):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.simulator = SimulatorServer(
            callback_url=f"{self.url}/callback/smsc/{TOKEN}", secret=SECRET, signature="md5",
            login="venue", password="venue-password").start()
        self.database = database
        self.config = write_config(
            folder / "callpass.toml", port=self.port, database=self.database,
            provider_url=self.simulator.url, script=fake_script(folder / "fw"),
            arp=write_arp(folder / "arp", {ip: mac for ip, mac, _ in GUESTS.values()}),
            # The RADIUS backend (the router asks) and its section; no NAS answers on coa_port.
            firewall="radius", sections={
                "portal": {"session_minutes": 60},
                "radius": {"token": RADIUS_TOKEN, "clients": ["127.0.0.1/32"],
                           "secret": RADIUS_SECRET, "coa_port": free_udp_port(),
                           "idle_timeout_seconds": 600, "rate_limit": "2M/4M"}})
        self.serve = ServeProcess(self.config, folder / "serve.log").start(self.port)
        self.engine = storage.connect(self.database)
        self.radius = FreeRadius(folder / "freeradius", self.url, RADIUS_TOKEN).start()

    def stop(self):
        self.radius.stop()
        self.serve.stop()
        self.simulator.stop()
        self.engine.dispose()

    def verify(self, guest):
        """The guest types its phone on the form and calls: returns its open session."""
        ip, mac, phone = GUESTS[guest]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                          source_address=(ip, 0))
        conn.request("POST", "/", body="phone=" + phone.replace("+", "%2B"),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        answer = conn.getresponse()
        assert answer.status == 303, answer.read()
        conn.close()
        called = requests.post(self.simulator.url + "/sim/call", data={"phone": phone.lstrip("+")},
                               timeout=10).json()
        assert called["status"] == 200, called
        session = sessions.active_session(self.engine, mac)
        assert session is not None, f"no session for {mac} after the call"
        return session

    def csv(self):
        """The identification log as the admin downloads it from /admin/log.csv."""
        subprocess.run([sys.executable, "-m", "portal", "admin", "add", "boss", "--config",
                        str(self.config)], input=ADMIN_PASSWORD + "\n", text=True, check=True,
                       capture_output=True, timeout=30)
        with requests.Session() as browser:
            page = browser.get(self.url + "/admin/login", timeout=5).text
            csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            signed_in = browser.post(self.url + "/admin/login", timeout=5, data={
                "name": "boss", "password": ADMIN_PASSWORD, "csrf_token": csrf})
            assert signed_in.ok and "/admin/login" not in signed_in.url
            export = browser.get(self.url + "/admin/log.csv", timeout=10)
            assert export.status_code == 200
        # Column titles are in the admin's language; the columns' order is fixed (idlog).
        rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
        names = ("phone", "mac", "ip", "verified_by", "verified_at", "session_start",
                 "session_end", "end_reason", "bytes_in", "bytes_out")
        assert len(rows[0]) == len(names)
        return [dict(zip(names, row)) for row in rows[1:]]


@pytest.fixture(scope="module")
def venue(tmp_path_factory, servers):
    folder = tmp_path_factory.mktemp("freeradius")
    venue = Venue(folder, servers.new_database(folder))
    yield venue
    venue.stop()


def mac_login(mac):
    """What MikroTik (login-by=mac) sends when a device associates."""
    return {"User-Name": mac.upper(), "User-Password": "", "Calling-Station-Id": mac.upper(),
            "Called-Station-Id": "hotspot1", "NAS-Identifier": "venue-router",
            "NAS-Port-Type": "Wireless-802.11", "Framed-IP-Address": "10.5.50.10",
            "Service-Type": "Login-User", "Acct-Session-Id": "80000001"}


def chap_login(mac, password):
    """An http-chap login as MikroTik sends it: the browser posted MD5(chap-id + password +
    chap-challenge) and the router puts chap-id before it (CHAP-Password) with the challenge.
    The chap-id stays below 32: radclient takes a 17-byte CHAP-Password of printable bytes only
    for a cleartext password and hashes it again (1 run in 10 failed at random before)."""
    chap_id, challenge = bytes([os.urandom(1)[0] % 32]), os.urandom(16)
    return {"User-Name": mac.upper(), "Calling-Station-Id": mac.upper(),
            "CHAP-Password": chap_id + hashlib.md5(chap_id + password.encode()
                                                   + challenge).digest(),
            "CHAP-Challenge": challenge, "NAS-Identifier": "venue-router",
            "Service-Type": "Login-User"}


def seconds_left(session):
    return (session.ends_at - datetime.now(timezone.utc)).total_seconds()


ACCEPT_ONLY = ("Session-Timeout", "Idle-Timeout", "Mikrotik-Rate-Limit", "WISPr-Bandwidth-Max-Up",
               "WISPr-Bandwidth-Max-Down")


def test_the_deployed_config_passes_freeradius_check(venue):
    status, output = venue.radius.check()
    assert status == 0, output


def test_a_device_verified_by_a_call_is_accepted_for_the_time_its_session_has_left(venue):
    session = venue.verify("accepted")
    code, reply = venue.radius.auth(mac_login(session.mac))
    assert code == "Access-Accept", venue.radius.log()[-3000:]
    assert abs(int(reply["Session-Timeout"]) - seconds_left(session)) < 5
    assert 3500 < int(reply["Session-Timeout"]) <= 3600  # session_minutes = 60
    assert reply["Idle-Timeout"] == "600"
    assert reply["Mikrotik-Rate-Limit"] == "2M/4M"
    assert (reply["WISPr-Bandwidth-Max-Up"], reply["WISPr-Bandwidth-Max-Down"]) == ("2000000",
                                                                                  "4000000")


def test_an_unknown_or_ended_device_is_rejected_with_nothing_of_an_accept(venue):
    code, reply = venue.radius.auth(mac_login("02:aa:00:00:00:99"))
    assert code == "Access-Reject"
    assert reply.get("Reply-Message") and not set(ACCEPT_ONLY) & set(reply)

    session = venue.verify("ended")
    assert venue.radius.auth(mac_login(session.mac))[0] == "Access-Accept"
    assert sessions.end_session(venue.engine, session.id, "admin")
    code, reply = venue.radius.auth(mac_login(session.mac))
    assert code == "Access-Reject"
    assert reply.get("Reply-Message") and not set(ACCEPT_ONLY) & set(reply)


@pytest.mark.parametrize("spelling", [
    lambda mac: mac.upper().replace(":", "-"),                                   # AA-BB-CC-…
    lambda mac: ".".join(mac.replace(":", "")[i:i + 4] for i in (0, 4, 8)),      # aabb.ccdd.eeff
    lambda mac: mac.replace(":", "").upper(),                                    # AABBCCDDEEFF
], ids=["windows", "cisco", "bare"])
def test_the_mac_matches_however_the_router_spells_it(venue, spelling):
    session = sessions.active_session(venue.engine, GUESTS["spelled"][1]) or venue.verify("spelled")
    code, reply = venue.radius.auth({**mac_login(session.mac),
                                     "User-Name": spelling(session.mac),
                                     "Calling-Station-Id": spelling(session.mac)})
    assert code == "Access-Accept" and int(reply["Session-Timeout"]) > 3500
    # A router that sends the MAC only as User-Name (UniFi, CoovaChilli MAC authentication).
    without_station = {**mac_login(session.mac), "User-Name": spelling(session.mac)}
    del without_station["Calling-Station-Id"]
    assert venue.radius.auth(without_station)[0] == "Access-Accept"


def test_an_http_chap_login_needs_the_one_time_password_of_the_session(venue):
    session = venue.verify("chap")
    password = radius.login_password(SECRET_KEY, session.id)

    code, reply = venue.radius.auth(chap_login(session.mac, password))
    assert code == "Access-Accept", venue.radius.log()[-3000:]
    assert abs(int(reply["Session-Timeout"]) - seconds_left(session)) < 5

    code, reply = venue.radius.auth(chap_login(session.mac, password[:-1] + "x"))
    assert code == "Access-Reject" and not set(ACCEPT_ONLY) & set(reply)
    # Another session's password is no better.
    code, reply = venue.radius.auth(chap_login(session.mac,
                                               radius.login_password(SECRET_KEY, session.id + 1)))
    assert code == "Access-Reject" and not set(ACCEPT_ONLY) & set(reply)

    # http-pap: the router sends the password itself.
    pap = {"User-Name": session.mac.upper(), "Calling-Station-Id": session.mac.upper()}
    assert venue.radius.auth({**pap, "User-Password": password})[0] == "Access-Accept"
    code, reply = venue.radius.auth({**pap, "User-Password": "not-the-password"})
    assert code == "Access-Reject" and not set(ACCEPT_ONLY) & set(reply)


def test_accounting_lands_on_the_session_and_in_the_csv_export(venue):
    session = venue.verify("accounted")
    report = {"Acct-Session-Id": "81a00005", "Calling-Station-Id": session.mac.upper(),
              "User-Name": session.mac.upper(), "NAS-IP-Address": "10.5.50.1",
              "NAS-Identifier": "venue-router", "Framed-IP-Address": "10.5.50.15"}
    assert venue.radius.acct({**report, "Acct-Status-Type": "Start"})[0] == "Accounting-Response"
    assert venue.radius.acct({**report, "Acct-Status-Type": "Interim-Update",
                              "Acct-Input-Octets": 1500, "Acct-Output-Octets": 70000,
                              "Acct-Session-Time": 60})[0] == "Accounting-Response"
    # The router's 32-bit counters wrapped: Gigawords count the overflows.
    code, _ = venue.radius.acct({**report, "Acct-Status-Type": "Stop",
                                 "Acct-Input-Octets": 2500, "Acct-Output-Octets": 123456,
                                 "Acct-Output-Gigawords": 1, "Acct-Session-Time": 125,
                                 "Acct-Terminate-Cause": "User-Request"})
    assert code == "Accounting-Response"

    with venue.engine.connect() as conn:
        rows = conn.execute(select(storage.nas_session)
                            .where(storage.nas_session.c.access_session_id == session.id)).all()
    assert len(rows) == 1  # Start, Interim-Update and Stop of one router session
    row = rows[0]
    assert (row.bytes_in, row.bytes_out, row.seconds) == (2500, 2**32 + 123456, 125)
    assert (row.nas_ip, row.nas_identifier, row.nas_session_id) == ("10.5.50.1", "venue-router",
                                                                   "81a00005")
    assert row.stopped_at is not None

    logged = [line for line in venue.csv() if line["mac"] == session.mac]
    assert len(logged) == 1
    assert (logged[0]["bytes_in"], logged[0]["bytes_out"]) == ("2500", str(2**32 + 123456))


@pytest.mark.parametrize("who", ["wrong token", "address not in radius.clients"])
def test_a_freeradius_callpass_does_not_trust_gets_no_accept(venue, who, tmp_path):
    session = sessions.active_session(venue.engine, GUESTS["outsider"][1]) \
        or venue.verify("outsider")
    proxy = None
    if who == "wrong token":
        outsider = FreeRadius(tmp_path, venue.url, "not-the-radius-token-0123456789")
    else:
        proxy = SourceProxy(venue.port, source="127.0.0.2")
        outsider = FreeRadius(tmp_path, f"http://127.0.0.1:{proxy.port}", RADIUS_TOKEN)
    outsider.start()
    try:
        code, reply = outsider.auth(mac_login(session.mac))
        assert code == "Access-Reject" and not set(ACCEPT_ONLY) & set(reply)
        password = radius.login_password(SECRET_KEY, session.id)
        assert outsider.auth(chap_login(session.mac, password))[0] == "Access-Reject"
        # Accounting is not acknowledged, so the router keeps it for a FreeRADIUS that works.
        code, _ = outsider.acct({"Acct-Status-Type": "Start", "Acct-Session-Id": "81a00006",
                                 "Calling-Station-Id": session.mac.upper()})
        assert code is None
    finally:
        outsider.stop()
        if proxy:
            proxy.close()
    if proxy:
        assert proxy.forwarded  # callpass was asked, from 127.0.0.2, and said no
    # The venue's own FreeRADIUS still lets the device in.
    assert venue.radius.auth(mac_login(session.mac))[0] == "Access-Accept"


def test_a_freeradius_started_before_callpass_lets_devices_in_once_callpass_answers(venue,
                                                                                     tmp_path):
    session = sessions.active_session(venue.engine, GUESTS["accepted"][1]) \
        or venue.verify("accepted")
    port = free_port()
    early = FreeRadius(tmp_path, f"http://127.0.0.1:{port}", RADIUS_TOKEN).start()
    try:
        code, reply = early.auth(mac_login(session.mac))
        assert code == "Access-Reject" and not set(ACCEPT_ONLY) & set(reply)  # fails closed
        # callpass comes up at CALLPASS_URL: no restart of FreeRADIUS, no 30 s wait.
        callpass_up = SourceProxy(venue.port, source="127.0.0.1", port=port)
        try:
            assert wait_until(lambda: early.auth(mac_login(session.mac))[0] == "Access-Accept",
                              seconds=5, interval=0.2)
        finally:
            callpass_up.close()
    finally:
        early.stop()
