"""The HTTP side of FreeRADIUS's rlm_rest (authorize, accounting) and the RADIUS backend's
Disconnect-Message, with the Flask test client and a stand-in router that answers RFC 5176.

The real FreeRADIUS in front of this API is tested in tests/test_radius_freeradius.py.
"""

import hashlib
import socket
import threading

import pytest
from admin_support import admin  # noqa: F401  (fixture)
from sqlalchemy import select

from portal import idlog, radius, sessions, storage

TOKEN = "radius-token-0123456789"
MAC = "02:00:00:00:00:10"
FREERADIUS = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def cfg(cfg):
    """The usual test config with the RADIUS backend and a [radius] section."""
    cfg["gateway"]["firewall"] = "radius"
    cfg["radius"].update(token=TOKEN, clients=["127.0.0.1/32"], secret="nas-secret",
                         idle_timeout_seconds=600, rate_limit="2M/4M")
    return cfg


@pytest.fixture
def app(configured_app):
    return configured_app


def rest(**attributes):
    """A request body as rlm_rest sends it."""
    return {name: {"type": "string", "value": [value]} for name, value in attributes.items()}


def ask(app, path, body, environ=FREERADIUS, token=TOKEN):
    return app.test_client().post(f"/radius/{token}/{path}", json=body, environ_base=environ)


def open_session(app, mac=MAC, minutes=30):
    engine = app.extensions["callpass"].engine
    with storage.begin(engine) as conn:
        return sessions.grant_access(conn, mac, "10.5.50.10", "+79161234567", minutes)


def test_a_verified_device_is_accepted_for_the_time_it_has_left(app):
    open_session(app, minutes=30)
    answer = ask(app, "authorize", rest(**{"User-Name": MAC.upper(), "User-Password": "",
                                           "Calling-Station-Id": MAC.upper()}))
    assert answer.status_code == 200
    reply = answer.get_json()
    assert reply["control:Auth-Type"] == "Accept"
    assert 29 * 60 < reply["reply:Session-Timeout"] <= 30 * 60
    assert reply["reply:Idle-Timeout"] == 600
    assert reply["reply:Mikrotik-Rate-Limit"] == "2M/4M"
    assert (reply["reply:WISPr-Bandwidth-Max-Up"], reply["reply:WISPr-Bandwidth-Max-Down"]) == \
        (2_000_000, 4_000_000)


@pytest.mark.parametrize("spelling", ["02:00:00:00:00:10", "02-00-00-00-00-10", "0200.0000.0010",
                                      "020000000010", "02:00:00:00:00:10".upper()])
def test_every_common_spelling_of_the_mac_is_the_same_device(app, spelling):
    open_session(app)
    assert ask(app, "authorize", rest(**{"User-Name": spelling})).status_code == 200


def test_unknown_and_ended_devices_are_rejected_with_a_reason(app):
    answer = ask(app, "authorize", rest(**{"User-Name": MAC}))
    assert answer.status_code == 401
    assert answer.get_json() == {"reply:Reply-Message": answer.get_json()["reply:Reply-Message"]}
    session_id = open_session(app)
    sessions.end_session(app.extensions["callpass"].engine, session_id, "admin")
    assert ask(app, "authorize", rest(**{"User-Name": MAC})).status_code == 401
    assert ask(app, "authorize", rest(**{"User-Name": "not a mac"})).status_code == 401


def test_a_router_login_gets_the_one_time_password_for_chap_to_check(app):
    session_id = open_session(app)
    answer = ask(app, "authorize", rest(**{"User-Name": MAC, "CHAP-Password": "0x01ab",
                                           "Calling-Station-Id": MAC}))
    reply = answer.get_json()
    secret_key = app.extensions["callpass"].config["portal"]["secret_key"]
    assert reply["control:Cleartext-Password"] == radius.login_password(secret_key, session_id)
    assert "control:Auth-Type" not in reply  # chap decides, not callpass


def test_a_login_naming_another_device_than_the_router_saw_is_rejected(app):
    open_session(app)
    answer = ask(app, "authorize", rest(**{"User-Name": MAC, "CHAP-Password": "0x01ab",
                                           "Calling-Station-Id": "02:00:00:00:00:66"}))
    assert answer.status_code == 401


def test_only_the_configured_freeradius_with_the_token_gets_an_answer(app):
    open_session(app)
    body = rest(**{"User-Name": MAC})
    refused = ask(app, "authorize", body, token="wrong-token-0123456789")
    assert refused.status_code == 404 and refused.data == b""  # no page for FreeRADIUS to log
    assert ask(app, "authorize", body, environ={"REMOTE_ADDR": "10.5.50.10"}).status_code == 404
    assert ask(app, "accounting", body, environ={"REMOTE_ADDR": "10.5.50.10"}).status_code == 404
    assert ask(app, "authorize", "not an object").status_code == 400


def accounting(kind, session_id="81000001", in_octets=0, out_octets=0, seconds=0, gigawords=0):
    return rest(**{"Acct-Status-Type": kind, "User-Name": MAC, "Calling-Station-Id": MAC,
                   "Acct-Session-Id": session_id, "NAS-IP-Address": "10.5.50.1",
                   "NAS-Identifier": "hotspot1", "Acct-Input-Octets": str(in_octets),
                   "Acct-Output-Octets": str(out_octets), "Acct-Input-Gigawords": str(gigawords),
                   "Acct-Session-Time": str(seconds)})


def test_accounting_lands_on_the_session_and_in_the_export(app):
    session_id = open_session(app)
    assert ask(app, "accounting", accounting("Start")).status_code == 204
    ask(app, "accounting", accounting("Interim-Update", in_octets=1000, out_octets=5000, seconds=60))
    ask(app, "accounting", accounting("Stop", in_octets=2000, out_octets=9000, seconds=90,
                                      gigawords=1))
    # The device joins again: a new router session within the same access session.
    ask(app, "accounting", accounting("Interim-Update", session_id="81000002", in_octets=10,
                                      out_octets=20, seconds=5))
    engine = app.extensions["callpass"].engine
    with engine.connect() as conn:
        rows = conn.execute(select(storage.nas_session).order_by(storage.nas_session.c.id)).all()
    assert [(r.access_session_id, r.nas_ip, r.nas_identifier, r.seconds) for r in rows] == \
        [(session_id, "10.5.50.1", "hotspot1", 90), (session_id, "10.5.50.1", "hotspot1", 5)]
    assert rows[0].bytes_in == 2**32 + 2000 and rows[0].stopped_at is not None
    lines = "".join(idlog.csv_chunks(engine)).splitlines()
    assert lines[0].endswith("end_reason,bytes_in,bytes_out")
    assert lines[1].endswith(f",open,{2**32 + 2010},9020")
    # Nothing is recorded for a device that never had a session, and the router is still told OK.
    unknown = accounting("Start") | rest(**{"Calling-Station-Id": "02:00:00:00:00:99"})
    assert ask(app, "accounting", unknown).status_code == 204


class StandInRouter:
    """A NAS that answers Disconnect-Requests on a UDP port (ACK, or NAK, or silence) and
    records what it got (checked with the shared secret, as a real router does)."""

    def __init__(self, secret, answer="ack"):
        from pyrad.dictionary import Dictionary

        self.secret, self.answer = secret.encode(), answer
        self.dictionary = Dictionary(str(radius.DICTIONARY))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        from pyrad import packet

        while True:
            data, peer = self.sock.recvfrom(4096)
            request = packet.CoAPacket(packet=data, secret=self.secret, dict=self.dictionary)
            expected = hashlib.md5(data[:4] + b"\0" * 16 + data[20:] + self.secret).digest()
            self.received.append({"valid": request.authenticator == expected,
                                  **{key: request[key][0] for key in request.keys()}})
            if self.answer == "silent":
                continue
            reply = request.CreateReply()
            reply.code = packet.DisconnectACK if self.answer == "ack" else packet.DisconnectNAK
            self.sock.sendto(reply.ReplyPacket(), peer)


def end_from_admin(app, admin_client, session_id):
    """The admin ends the session on the sessions page; returns the page after the redirect."""
    page = admin_client.post(f"/admin/sessions/{session_id}/end", page="/admin/sessions",
                             follow_redirects=True)
    return page.get_data(as_text=True)


@pytest.mark.parametrize("answer, words", [
    ("ack", "the router disconnected the device"),
    ("nak", "the router (127.0.0.1) refused"),
    ("silent", "did not answer within"),
])
def test_ending_a_session_sends_the_router_a_disconnect_and_says_what_it_answered(
        app, admin, answer, words):
    svc = app.extensions["callpass"]
    router = StandInRouter("nas-secret", answer)
    svc.firewall.coa_port, svc.firewall.timeout = router.port, 0.5
    session_id = open_session(app)
    ask(app, "accounting", accounting("Start") | rest(**{"NAS-IP-Address": "127.0.0.1"}))
    svc.firewall_worker.start()

    page = end_from_admin(app, admin, session_id)
    assert words in page
    [got] = router.received[:1]
    assert got["valid"] and got["Acct-Session-Id"] == "81000001"
    assert got["Calling-Station-Id"] == MAC.upper()
    assert ask(app, "authorize", rest(**{"User-Name": MAC})).status_code == 401


def test_a_device_no_router_reported_is_ended_without_a_disconnect(app, admin):
    app.extensions["callpass"].firewall_worker.start()
    session_id = open_session(app)
    page = end_from_admin(app, admin, session_id)
    assert "no router has reported this device" in page


def test_the_log_page_shows_the_traffic_a_router_reported(app, admin):
    open_session(app)
    ask(app, "accounting", accounting("Interim-Update", in_octets=3_000_000, out_octets=7_000_000))
    page = admin.get("/admin/log").get_data(as_text=True)
    assert "Traffic (from / to the device)" in page
    assert "3.0 MB / 7.0 MB" in page
