"""openNDS gateways as venues of a chain (portal/opennds_remote.py), through the Flask test client:
the encrypted arrival (level 3), the gateway's poll and acknowledgements, and what a hostile guest
or a stranger can do with either. A real openNDS 9.10 with its own authmon and PHP is in
tests/test_opennds_gateway_venue.py.
"""

import base64
import hashlib
import os
import shutil
import subprocess
from urllib.parse import quote, unquote, urlsplit

from unittest.mock import ANY

import pytest
from admin_support import admin  # noqa: F401
from conftest import notify, settle
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import select

from portal import opennds_remote, venues
from portal.storage import MAIN_VENUE, access_session, verification

FASKEY = "0f" * 32                      # 64 characters: PHP uses the first 32 bytes
GATEWAY = "cafe-arbat-7f3k2q"
HID = "ab" * 32
MAC = "02:aa:bb:cc:dd:01"
PHONE = "+79161234567"


@pytest.fixture
def arbat(app):
    """Venue "arbat" with an openNDS gateway; returns its id."""
    return venues.save(app.extensions["callpass"].engine, {
        "slug": "arbat", "name": "Arbat", "nas_identifier": None, "nas_ip": None,
        "unifi_site": None, "opennds_gateway": GATEWAY, "opennds_faskey": FASKEY})


def details(**changes):
    """openNDS 9.10's client details, as its level 3 encrypts them."""
    fields = {"hid": HID, "clientip": "192.168.10.23", "clientmac": MAC, "client_type": "cpd_can",
              "gatewayname": NODE_NAME, "gatewayurl": "http%3A%2F%2F192.168.10.1%3A2050",
              "version": "9.10.0", "gatewayaddress": "192.168.10.1:2050",
              "gatewaymac": "020000000001", "originurl": quote("http://example.org/news"),
              "clientif": "br-lan", "themespec": "", **changes}
    return ", ".join(f"{key}={value}" for key, value in fields.items()) + ", "


def seal(text, faskey=FASKEY, iv="0123456789abcdef"):
    """What openNDS puts in the address: fas (base64 of base64 AES-256-CBC) and iv."""
    padder = padding.PKCS7(128).padder()
    plain = padder.update(text.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(opennds_remote.aes_key(faskey)),
                       modes.CBC(iv.encode())).encryptor()
    sealed = encryptor.update(plain) + encryptor.finalize()
    return {"fas": base64.b64encode(base64.b64encode(sealed)).decode(), "iv": iv}


def arrive(browser, query, slug="arbat"):
    answer = browser.get(f"/opennds/{slug}/", query_string=query)
    assert answer.status_code == 303
    return answer


NODE_NAME = "cafe-arbat-7f3k2q%20Node%3a02cc00000001%20"  # as openNDS 9.10 sends it


def poll(client, payload="none", action="view", gatewayhash=None, slug="arbat"):
    gatewayhash = gatewayhash or hashlib.sha256(NODE_NAME.encode()).hexdigest()
    return client.post(f"/opennds/{slug}/", data={
        "auth_get": action, "gatewayhash": gatewayhash,
        "payload": base64.b64encode(payload.encode()).decode()})


def entries(answer):
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200 and text.startswith("*"), text
    return [unquote(entry).split() for entry in text[2:].split()]


def rhid(hid=HID):
    return hashlib.sha256((hid + FASKEY).encode()).hexdigest()


def sign_in(app, browser, phone=PHONE):
    """browser types phone and the call comes; returns its verification row."""
    started = browser.post("/", data={"phone": phone})
    assert started.status_code == 303, started.get_data(as_text=True)
    assert notify(app.test_client(), phone.lstrip("+")).status_code == 200
    settle(app)
    token = urlsplit(started.headers["Location"]).path.rsplit("/", 1)[-1]
    with app.extensions["callpass"].engine.connect() as conn:
        return conn.execute(select(verification).where(verification.c.token == token)).one()


def test_a_guest_of_the_gateway_gets_in_when_the_gateway_takes_its_token(app, arbat, firewall):
    browser = app.test_client()
    arrive(browser, seal(details()))
    row = sign_in(app, browser)
    # The device is the one the gateway named, at the gateway's venue, with its token.
    assert (row.mac, row.ip, row.venue_id) == (MAC, "192.168.10.23", arbat)
    assert row.gateway_token == rhid()
    status = browser.get(f"/api/verifications/{row.token}").get_json()
    assert status["access"] == "connecting"
    # The local firewall leaves it to the gateway.
    assert not [call for call in firewall.calls if call[0] == "allow"]

    # authmon asks: one entry, the token and the session's minutes (and no limits).
    listed = entries(poll(app.test_client()))
    assert len(listed) == 1 and listed[0][0] == rhid() and listed[0][2:] == ["0"] * 4
    assert int(listed[0][1]) == 240  # portal.session_minutes (the default)
    # Until it says it let the device in, the guest is "connecting" and asked again.
    assert entries(poll(app.test_client())) == listed
    assert poll(app.test_client(), "* " + rhid()).get_data(as_text=True) == "ack"
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "online"
    assert entries(poll(app.test_client())) == []

    # The wait page sends the browser through the gateway's /opennds_auth/ with that token.
    page = browser.get(f"/wait/{row.token}").get_data(as_text=True)
    assert f"http://192.168.10.1:2050/opennds_auth/?tok={rhid()}&amp;redir=" in page
    assert FASKEY not in page and GATEWAY not in page
    # openNDS hands a browser it let in already back with status=authenticated.
    back = browser.get("/opennds/arbat/", query_string={
        "status": "authenticated", "tok": rhid(), "redir": "http://example.org/news"})
    online = browser.get(back.headers["Location"]).get_data(as_text=True)
    assert "You are online" in online and 'href="http://example.org/news"' in online

    # The gateway device is known by its first guest's fas: its MAC and when it last asked.
    assert opennds_remote.nodes(app.extensions["callpass"].engine) == {
        arbat: [("02:00:00:00:00:01", ANY)]}


def test_a_device_the_gateway_forgot_is_offered_again_with_its_new_token(app, arbat):
    browser = app.test_client()
    arrive(browser, seal(details()))
    row = sign_in(app, browser)
    poll(app.test_client(), "* " + rhid())
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "online"
    # The same fas again (a reload, or someone replaying what they saw go by): nothing changes.
    arrive(app.test_client(), seal(details()))
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "online"
    assert entries(poll(app.test_client())) == []
    # The gateway rebooted: it sends the device to callpass again, with a new hid.
    arrive(browser, seal(details(hid="ef" * 32)))
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "connecting"
    assert [entry[0] for entry in entries(poll(app.test_client()))] == [rhid("ef" * 32)]
    poll(app.test_client(), "* " + rhid("ef" * 32))
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "online"
    # No second session, no second verification.
    with app.extensions["callpass"].engine.connect() as conn:
        assert len(conn.execute(select(access_session)).all()) == 1
        assert len(conn.execute(select(verification)).all()) == 1


def test_an_older_authmon_that_lists_takes_the_entries_without_acknowledging(app, arbat):
    browser = app.test_client()
    arrive(browser, seal(details()))
    row = sign_in(app, browser)
    assert [entry[0] for entry in entries(poll(app.test_client(), action="list"))] == [rhid()]
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "online"
    assert entries(poll(app.test_client(), action="list")) == []


def test_what_the_gateway_is_sent_fits_what_authmon_reads(app, arbat):
    engine = app.extensions["callpass"].engine
    for n in range(30):
        browser = app.test_client()
        arrive(browser, seal(details(hid=f"{n:064x}", clientmac=f"02:aa:bb:cc:00:{n:02x}")))
        sign_in(app, browser, phone=f"+7916123{n:04d}")
    text = poll(app.test_client()).get_data(as_text=True)
    assert len(text) <= 1024  # authmon reads no more; no entry is cut in two
    first = entries(poll(app.test_client()))
    assert 5 <= len(first) < 30 and all(len(entry) == 6 for entry in first)
    # The others come once these are taken.
    poll(app.test_client(), "* " + " ".join(entry[0] for entry in first))
    second = entries(poll(app.test_client()))
    assert second and not {e[0] for e in second} & {e[0] for e in first}
    with engine.connect() as conn:
        online = conn.execute(select(access_session.c.id)
                              .where(access_session.c.firewall_at.is_not(None))).all()
    assert len(online) == len(first)


@pytest.mark.parametrize("spoil", ["other key", "other gateway", "tampered", "flipped iv",
                                   "garbage", "no hid", "control characters"])
def test_a_fas_not_made_by_the_gateway_is_ignored(app, arbat, spoil):
    query = {
        "other key": lambda: seal(details(), faskey="1e" * 32),
        "other gateway": lambda: seal(details(gatewayname="someone-else")),
        "tampered": lambda: tampered(seal(details())),
        "flipped iv": lambda: {**seal(details()), "iv": "1123456789abcdef"},
        "garbage": lambda: {"fas": "bm90IGEgZmFz", "iv": "0123456789abcdef"},
        "no hid": lambda: seal(details(hid="x")),
        "control characters": lambda: seal(details(originurl="http://a\x01b/")),
    }[spoil]()
    browser = app.test_client()
    arrive(browser, query)
    # Nothing of it is kept: the device is unknown (callpass is not on the gateway's LAN).
    answer = browser.post("/", data={"phone": PHONE})
    assert answer.status_code == 403
    with app.extensions["callpass"].engine.connect() as conn:
        assert conn.execute(select(verification)).first() is None


def tampered(query):
    """Change one byte of the second block: the block decrypts to garbage."""
    sealed = bytearray(base64.b64decode(base64.b64decode(query["fas"])))
    sealed[20] ^= 0x01
    return {**query, "fas": base64.b64encode(base64.b64encode(bytes(sealed))).decode()}


def test_a_poll_without_a_known_gatewayhash_gets_nothing_and_changes_nothing(app, arbat):
    # Before any guest came through it, the gateway is not known yet: nothing for it.
    assert poll(app.test_client()).get_data(as_text=True) == "* "
    browser = app.test_client()
    arrive(browser, seal(details()))
    row = sign_in(app, browser)
    stranger = app.test_client()
    plain_name = hashlib.sha256(GATEWAY.encode()).hexdigest()  # without openNDS's node suffix
    for gatewayhash in ("0" * 64, plain_name, "not a hash"):
        answer = poll(stranger, gatewayhash=gatewayhash)
        assert answer.get_data(as_text=True) == "* "
        assert poll(stranger, "* " + rhid(), gatewayhash=gatewayhash).status_code == 200
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "connecting"
    assert poll(stranger, slug="main").status_code == 404       # no gateway there
    assert poll(stranger, slug="nowhere").status_code == 404
    assert poll(stranger, action="delete").status_code == 400
    bad = stranger.post("/opennds/arbat/", data={
        "auth_get": "view", "gatewayhash": hashlib.sha256(GATEWAY.encode()).hexdigest(),
        "payload": "%%%"})
    assert bad.status_code == 400
    # `clear` (authmon starting) forgets nothing: the session is still offered.
    assert poll(stranger, action="clear").get_data(as_text=True) == "ack"
    assert [entry[0] for entry in entries(poll(stranger))] == [rhid()]


def test_an_acknowledgement_reaches_only_the_gateways_own_venue(app, arbat):
    engine = app.extensions["callpass"].engine
    other = venues.save(engine, {"slug": "tverskaya", "name": "Tverskaya",
                                 "nas_identifier": None, "nas_ip": None, "unifi_site": None,
                                 "opennds_gateway": "tverskaya-9x8c", "opennds_faskey": FASKEY})
    browser = app.test_client()
    arrive(browser, seal(details()))
    row = sign_in(app, browser)
    # The other venue's gateway (known by a guest of its own) names this token: nothing happens.
    arrive(app.test_client(), seal(details(gatewayname="tverskaya-9x8c", hid="cd" * 32)),
           slug="tverskaya")
    answer = app.test_client().post("/opennds/tverskaya/", data={
        "auth_get": "view", "gatewayhash": hashlib.sha256(b"tverskaya-9x8c").hexdigest(),
        "payload": base64.b64encode(f"* {rhid()}".encode()).decode()})
    assert answer.get_data(as_text=True) == "ack"
    assert opennds_remote.nodes(engine)[other]
    assert browser.get(f"/api/verifications/{row.token}").get_json()["access"] == "connecting"
    assert other != arbat


def test_the_venue_form_keeps_the_faskey_secret(app, arbat):
    engine = app.extensions["callpass"].engine
    form = {"slug": "arbat", "name": "Arbat", "opennds_gateway": GATEWAY, "opennds_faskey": ""}
    # Blank keeps the stored key; a new venue must give one; a bad one is refused.
    assert venues.read_form(form, has_faskey=True) == {
        "slug": "arbat", "name": "Arbat", "nas_identifier": None, "called_station": None,
        "nas_ip": None, "unifi_site": None, "opennds_gateway": GATEWAY}
    with pytest.raises(venues.Invalid) as missing:
        venues.read_form(form)
    assert "opennds_faskey" in missing.value.errors
    with pytest.raises(venues.Invalid) as bad:
        venues.read_form({**form, "opennds_faskey": "short key!", "opennds_gateway": "a b"})
    assert set(bad.value.errors) == {"opennds_faskey", "opennds_gateway"}
    # No gateway, no key; the audit entry never holds the key.
    assert venues.read_form({**form, "opennds_gateway": ""})["opennds_faskey"] is None
    values = venues.read_form({**form, "opennds_faskey": "2c" * 20})
    assert venues.filled(values)["opennds_faskey"] == "(new)"
    # Another venue cannot take the same gateway.
    with pytest.raises(venues.Invalid) as clash:
        venues.save(engine, {**values, "slug": "copy"})
    assert "opennds_gateway" in clash.value.errors
    assert venues.by_id(engine, MAIN_VENUE).opennds_gateway is None
    # The main venue's guests are the local gateway's: an openNDS gateway gets a venue of its own.
    with pytest.raises(venues.Invalid) as main:
        venues.read_form({**form, "slug": "main", "opennds_gateway": "elsewhere"}, is_main=True)
    assert "opennds_gateway" in main.value.errors


@pytest.mark.skipif(shutil.which("php") is None and os.environ.get("CI") != "true",
                    reason="needs php-cli (deploy/install-system-packages --tests)")
def test_callpass_opens_what_openndss_own_php_seals(app, arbat):
    # openNDS 9.10's own encryption step (from its binary), run by PHP.
    text = details()
    script = (f'$key="{FASKEY}"; $string="{text}"; $cipher="aes-256-cbc"; '
              '$secret_iv = base64_encode(openssl_random_pseudo_bytes("8")); '
              '$iv = substr(openssl_digest($secret_iv, "sha256"), 0, 16 ); '
              '$string = base64_encode( openssl_encrypt( $string, $cipher, $key, 0, $iv ) ); '
              'echo "fas=".$string."&iv=".$iv;')
    done = subprocess.run(["php", "-r", script], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    fas, iv = done.stdout.removeprefix("fas=").split("&iv=")
    assert opennds_remote.decrypt(fas, iv, FASKEY) == text
    assert opennds_remote.gateway_hash(GATEWAY) == subprocess.run(
        ["php", "-r", f"echo openssl_digest('{GATEWAY}', 'sha256');"],
        capture_output=True, text=True, timeout=20).stdout


def test_the_venues_page_shows_each_gateway_device_and_never_the_key(app, arbat, admin):
    page = admin.get("/admin/venues").get_data(as_text=True)
    assert "no guest has come through it yet" in page
    arrive(app.test_client(), seal(details()))
    page = admin.get("/admin/venues").get_data(as_text=True)
    row = page.split('id="venue-arbat"', 1)[1].split("</tr>", 1)[0]
    assert GATEWAY in row and "gateway 02:00:00:00:00:01, last heard from at" in row
    form = admin.get(f"/admin/venues/{arbat}").get_data(as_text=True)
    assert FASKEY not in form and "/opennds/arbat/" in form and "Set. Leave blank" in form
    # Saving the form without touching the key keeps it.
    saved = admin.post(f"/admin/venues/{arbat}", {"slug": "arbat", "name": "Arbat",
                                                 "opennds_gateway": GATEWAY},
                       page=f"/admin/venues/{arbat}")
    assert saved.status_code == 303
    assert venues.by_id(app.extensions["callpass"].engine, arbat).opennds_faskey == FASKEY


def test_a_flood_of_forged_arrivals_does_not_flood_the_log(app, arbat, caplog):
    browser = app.test_client()
    for _ in range(30):
        arrive(browser, {"fas": "bm90IGEgZmFz", "iv": "0123456789abcdef"})
    ignored = [r for r in caplog.records if "ignored a fas" in r.getMessage()]
    assert 1 <= len(ignored) <= 20
