"""openNDS without openNDS: the fas parameter, the tok, ndsctl's arguments and answers (a stand-in
ndsctl), the config, and the FAS hooks of the guest pages. tests/test_opennds.py runs the real one.
"""

import base64
import json
import re
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import GUEST_IP, GUEST_MAC, Guest

from portal import config as config_module
from portal import create_app, firewall, opennds, storage
from portal.firewall import FirewallError

FASKEY = "f" * 16 + "0123456789abcdef"
HID = "5a6f1a2ea0cbf89cae3d1a89c9895ce870a7a2b3ee9763f67ad85f1c58d6f618"
GATEWAY = "10.77.0.1"


def fas_for(mac=GUEST_MAC, ip=GUEST_IP, hid=HID, gateway=f"{GATEWAY}:2050",
            origin="http%3a%2f%2fexample.org%2fnews%3fx%3d1"):
    """A fas parameter as openNDS 9.10 writes it (seen on the real one: URL-encoded values and a
    "(null)" tail without "=")."""
    raw = (f"hid={hid}, clientip={ip}, clientmac={mac}, client_type=cpd_can, "
           f"gatewayname=callpass-test%20Node%3a02cc00000001%20, "
           f"gatewayurl=http%3a%2f%2f{GATEWAY}, "
           f"version=9.10.0, gatewayaddress={gateway}, gatewaymac=02cc00000001, "
           f"originurl={origin}, clientif=br-lan, themespec=(null), (null)(null)(null)(null)")
    return base64.b64encode(raw.encode()).decode()


@pytest.fixture
def gateway_is_local(monkeypatch):
    """This machine owns the test gateway's address (it is only a unit test)."""
    monkeypatch.setattr(opennds, "is_local_address", lambda ip: ip == GATEWAY)


# --- fas ----------------------------------------------------------------------------------------

def test_fas_as_opennds_writes_it_is_read():
    fields = opennds.parse_fas(fas_for())
    assert fields["hid"] == HID
    assert fields["clientmac"] == GUEST_MAC and fields["clientip"] == GUEST_IP
    assert fields["gatewayaddress"] == "10.77.0.1:2050"
    assert fields["originurl"] == "http://example.org/news?x=1"
    assert fields["gatewayname"] == "callpass-test Node:02cc00000001 "


@pytest.mark.parametrize("value", ["", "not base64!", base64.b64encode(b"\xff\xfe").decode(),
                                   base64.b64encode(b"no pairs here").decode(),
                                   "A" * 5000, None])
def test_garbage_fas_is_nothing(value):
    assert opennds.parse_fas(value) is None


def test_fas_naming_this_device_is_kept(gateway_is_local):
    assert opennds.accept_fas(fas_for(), GUEST_IP, GUEST_MAC) == {
        "mac": GUEST_MAC, "hid": HID, "gateway": "10.77.0.1:2050",
        "origin": "http://example.org/news?x=1"}
    # openNDS writes MACs in lower case; any spelling of the same MAC is the same device.
    assert opennds.accept_fas(fas_for(mac=GUEST_MAC.upper()), GUEST_IP, GUEST_MAC) is not None


@pytest.mark.parametrize("fas", [
    fas_for(mac="02:cc:00:00:00:12"),             # another device's MAC
    fas_for(ip="10.77.0.12"),                     # another device's address
    fas_for(mac="not-a-mac"),
    fas_for(hid="../../etc"),
    fas_for(gateway="192.0.2.66:2050"),           # not this machine: the browser would go there
    fas_for(gateway="127.0.0.1:2050"),
    fas_for(gateway="10.77.0.1"),                 # no port
    fas_for(gateway="10.77.0.1:99999"),
])
def test_fas_not_naming_this_device_or_this_gateway_is_ignored(gateway_is_local, fas):
    assert opennds.accept_fas(fas, GUEST_IP, GUEST_MAC) is None


def test_fas_of_a_device_off_the_lan_is_ignored(gateway_is_local):
    assert opennds.accept_fas(fas_for(), GUEST_IP, None) is None


@pytest.mark.parametrize("origin", ["javascript%3aalert(1)", "http%3a%2f%2fa%20b%2f",
                                    "http%3a%2f%2fuser%3apw%40example.org%2f", ""])
def test_an_origin_that_is_no_plain_web_address_is_dropped(gateway_is_local, origin):
    assert opennds.accept_fas(fas_for(origin=origin), GUEST_IP, GUEST_MAC)["origin"] == ""


def test_only_addresses_of_this_machine_are_local():
    assert opennds.is_local_address("127.0.0.1")
    assert not opennds.is_local_address("192.0.2.66")  # TEST-NET-1: nobody's


def test_tok_is_sha256_of_hid_and_faskey():
    # printf '%s' "$hid$faskey" | sha256sum, as openNDS computes it
    assert opennds.auth_token("abc", "key") == \
        "afcb12512ff218c850c8672f2f984f34d86f7739c5f4bee205442eb5a6ad6fff"


def test_auth_url_goes_through_opennds_to_the_original_page(gateway_is_local):
    fas = opennds.accept_fas(fas_for(), GUEST_IP, GUEST_MAC)
    url = opennds.auth_url(fas, FASKEY)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "10.77.0.1:2050", "/opennds_auth/")
    query = parse_qs(parts.query)
    assert query == {"tok": [opennds.auth_token(HID, FASKEY)],
                     "redir": ["http://example.org/news?x=1"]}
    assert FASKEY not in url


# --- ndsctl arguments and answers -----------------------------------------------------------------

@pytest.mark.parametrize("seconds, minutes", [(1, 1), (60, 1), (61, 2), (3600, 60), (3599, 60),
                                              (None, firewall.MAX_SECONDS // 60)])
def test_minutes_round_up_and_are_never_zero(seconds, minutes):
    assert opennds.auth_argv("02-CC-00-00-00-11", seconds) == ["auth", GUEST_MAC, str(minutes)]


def test_bad_macs_never_reach_ndsctl():
    for bad in ("", "02:cc:00:00:00", "02:cc:00:00:00:11;reboot", "--help"):
        with pytest.raises(ValueError):
            opennds.auth_argv(bad, 60)
        with pytest.raises(ValueError):
            opennds.deauth_argv(bad)


def client_entry(mac, state, session_end="null"):
    return {"gatewayname": "callpass-test", "gatewayaddress": "10.77.0.1:2050", "mac": mac,
            "ip": "10.77.0.11", "session_start": "0", "session_end": session_end,
            "token": "27f854c2", "state": state}


def test_ndsctl_json_is_read_as_states_and_seconds_left():
    text = json.dumps({"client_list_length": "2", "clients": {
        "02:cc:00:00:00:11": client_entry("02:cc:00:00:00:11", "Authenticated", "1000120"),
        "02:cc:00:00:00:12": client_entry("02:cc:00:00:00:12", "Preauthenticated")}})
    assert opennds.parse_clients(text, now=1000000) == {
        "02:cc:00:00:00:11": ("Authenticated", 120),
        "02:cc:00:00:00:12": ("Preauthenticated", None)}
    assert opennds.parse_clients("{}\n", now=0) == {}


# A stand-in ndsctl: records its arguments, answers `json` from clients.json, and fails `auth`
# for the MACs in refuse.json (no lease) as the real one does.
FAKE_NDSCTL = """
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "calls"), "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if os.path.exists(os.path.join(here, "hang")):
    time.sleep(60)
clients = json.load(open(os.path.join(here, "clients.json")))
verb, args = sys.argv[1], sys.argv[2:]
if verb == "json":
    print(json.dumps({"client_list_length": str(len(clients)), "clients": clients}))
elif verb == "auth":
    if args[0] in json.load(open(os.path.join(here, "refuse.json"))) or \\
            clients.get(args[0], {}).get("state") == "Authenticated":
        print(f"Failed to authenticate client {args[0]},{args[1]}.")
        sys.exit(1)
    clients[args[0]] = {"mac": args[0], "state": "Authenticated",
                        "session_end": str(int(time.time()) + 60 * int(args[1]))}
    print(f"Client {args[0]},{args[1]} authenticated.")
elif verb == "deauth":
    if clients.get(args[0], {}).get("state") != "Authenticated":
        print(f"Client {args[0]} not found.")
        sys.exit(1)
    clients[args[0]]["state"] = "Preauthenticated"
json.dump(clients, open(os.path.join(here, "clients.json"), "w"))
"""


class FakeNdsctl:
    def __init__(self, folder):
        self.folder = folder
        (folder / "ndsctl.py").write_text(FAKE_NDSCTL)
        self.set_clients({})
        (folder / "refuse.json").write_text("[]")
        (folder / "calls").write_text("")
        self.command = f"{sys.executable} {folder / 'ndsctl.py'}"

    def set_clients(self, clients):
        (self.folder / "clients.json").write_text(json.dumps(clients))

    def refuse(self, *macs):
        (self.folder / "refuse.json").write_text(json.dumps(macs))

    def calls(self):
        """ndsctl calls other than json, in order."""
        lines = (self.folder / "calls").read_text().splitlines()
        return [line for line in lines if line != "json"]

    def backend(self, timeout=5):
        cfg = config_module.load(None, environ={}, overrides={
            "gateway": {"firewall": "opennds", "script_timeout_seconds": timeout},
            "opennds": {"faskey": FASKEY, "ndsctl": self.command}})
        return firewall.from_config(cfg)


@pytest.fixture
def ndsctl(tmp_path):
    return FakeNdsctl(tmp_path)


def authenticated(mac, seconds_left):
    return {mac: {"mac": mac, "state": "Authenticated",
                  "session_end": str(int(time.time()) + seconds_left)}}


def test_allow_and_revoke_are_auth_and_deauth(ndsctl):
    backend = ndsctl.backend()
    assert isinstance(backend, opennds.NdsctlFirewall)
    backend.apply([("allow", "02:CC:00:00:00:11", 1800), ("allow", "02:cc:00:00:00:12", 90)])
    assert ndsctl.calls() == ["auth 02:cc:00:00:00:11 30", "auth 02:cc:00:00:00:12 2"]
    listed = backend.list()
    assert set(listed) == {"02:cc:00:00:00:11", "02:cc:00:00:00:12"}
    assert 1790 <= listed["02:cc:00:00:00:11"] <= 1800
    backend.apply([("revoke", "02:cc:00:00:00:12")])
    assert ndsctl.calls()[-1] == "deauth 02:cc:00:00:00:12"
    assert set(backend.list()) == {"02:cc:00:00:00:11"}


def test_revoking_a_mac_that_is_not_let_through_runs_nothing(ndsctl):
    ndsctl.set_clients({GUEST_MAC: {"mac": GUEST_MAC, "state": "Preauthenticated",
                                    "session_end": "null"}})
    ndsctl.backend().apply([("revoke", GUEST_MAC), ("revoke", "02:cc:00:00:00:99")])
    assert ndsctl.calls() == []


def test_an_authenticated_mac_is_left_alone_or_given_its_new_time(ndsctl):
    ndsctl.set_clients(authenticated(GUEST_MAC, 1800))
    backend = ndsctl.backend()
    backend.apply([("allow", GUEST_MAC, 1790)])  # about the same: openNDS would refuse auth
    assert ndsctl.calls() == []
    backend.apply([("allow", GUEST_MAC, 7200)])  # extended: deauth, then auth with the new time
    assert ndsctl.calls() == [f"deauth {GUEST_MAC}", f"auth {GUEST_MAC} 120"]
    assert 7190 <= backend.list()[GUEST_MAC] <= 7200


def test_a_device_without_a_lease_is_skipped_not_retried_forever(ndsctl):
    ndsctl.refuse("02:cc:00:00:00:99")
    backend = ndsctl.backend()
    backend.apply([("allow", "02:cc:00:00:00:99", 600), ("allow", GUEST_MAC, 600)])
    assert GUEST_MAC in backend.list() and "02:cc:00:00:00:99" not in backend.list()


def test_a_refused_auth_of_a_connected_device_is_a_firewall_error(ndsctl):
    ndsctl.set_clients({GUEST_MAC: {"mac": GUEST_MAC, "state": "Preauthenticated",
                                    "session_end": "null"}})
    ndsctl.refuse(GUEST_MAC)
    with pytest.raises(FirewallError, match="Failed to authenticate"):
        ndsctl.backend().apply([("allow", GUEST_MAC, 600)])


def test_bad_changes_run_nothing(ndsctl):
    with pytest.raises(ValueError):
        ndsctl.backend().apply([("allow", GUEST_MAC, 600), ("allow", "nonsense", 600)])
    assert (ndsctl.folder / "calls").read_text() == ""


def test_a_hanging_ndsctl_is_killed_and_reported(ndsctl):
    (ndsctl.folder / "hang").write_text("")
    started = time.monotonic()
    with pytest.raises(FirewallError, match="no answer within 1 s"):
        ndsctl.backend(timeout=1).list()
    assert time.monotonic() - started < 5
    assert not ndsctl.backend(timeout=1).is_healthy()


def test_a_missing_ndsctl_or_openndsless_answer_is_a_firewall_error(tmp_path):
    cfg = config_module.load(None, environ={}, overrides={
        "gateway": {"firewall": "opennds"},
        "opennds": {"faskey": FASKEY, "ndsctl": str(tmp_path / "no-such-ndsctl")}})
    with pytest.raises(FirewallError, match="cannot run"):
        firewall.from_config(cfg).list()
    cfg["opennds"]["ndsctl"] = f"{sys.executable} -c 'print(\"not json\")'"
    with pytest.raises(FirewallError, match="unreadable answer"):
        firewall.from_config(cfg).list()


# --- config ---------------------------------------------------------------------------------------

def safe_config(**opennds_keys):
    cfg = config_module.load(None, environ={}, overrides={
        "portal": {"secret_key": "s" * 32},
        "callback": {"token": "t" * 20},
        "provider": {"apikey": "key"},
        "gateway": {"firewall": "opennds"},
        "opennds": opennds_keys})
    return config_module.problems(cfg)


def test_the_opennds_backend_needs_a_faskey():
    assert any(p.startswith("opennds.faskey") for p in safe_config())
    assert any(p.startswith("opennds.faskey") for p in safe_config(faskey="short"))
    assert any(p.startswith("opennds.faskey") for p in safe_config(faskey="x" * 20 + " ;"))
    assert safe_config(faskey=FASKEY) == []
    assert any(p.startswith("opennds.ndsctl") for p in
               safe_config(faskey=FASKEY, ndsctl="nsenter 'unbalanced"))


def test_opennds_is_a_named_backend():
    assert "opennds" in config_module.FIREWALLS and "opennds" in firewall.BACKENDS


# --- the FAS hooks of the guest pages ------------------------------------------------------------

@pytest.fixture
def nds_app(cfg, firewall, gateway_is_local):
    """The portal with [gateway] firewall = "opennds" (the recording firewall stands in)."""
    cfg["gateway"]["firewall"] = "opennds"
    cfg["opennds"]["faskey"] = FASKEY
    app = create_app(cfg, firewall=firewall)
    storage.upgrade(app.extensions["callpass"].engine)
    yield app
    app.extensions["callpass"].engine.dispose()


def online_guest(app, neighbour_table, fas):
    """A guest who arrived with fas, called and is online; returns (guest, its wait page)."""
    guest = Guest(app, neighbour_table)
    page = guest.client.get("/", query_string={"fas": fas})
    assert page.status_code == 200 and b'name="phone"' in page.data
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    assert guest.status()["access"] == "online"
    return guest, guest.client.get(f"/wait/{guest.token}").get_data(as_text=True)


def next_link(page):
    """The /opennds_auth/ address the wait page sends the browser to, or None."""
    found = re.search(r'<a href="([^"]*)" id="opennds-next"', page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_after_the_call_the_wait_page_sends_the_browser_through_opennds(nds_app, neighbour_table,
                                                                          firewall):
    _guest, page = online_guest(nds_app, neighbour_table, fas_for())
    assert ("allow", GUEST_MAC) == firewall.calls[-1][:2]  # let through by the backend anyway
    url = next_link(page)
    assert url == ("http://10.77.0.1:2050/opennds_auth/?tok=" + opennds.auth_token(HID, FASKEY)
                   + "&redir=http%3A%2F%2Fexample.org%2Fnews%3Fx%3D1")
    assert f'http-equiv="refresh" content="1;url={url.replace("&", "&amp;")}"' in page
    assert FASKEY not in page


def test_a_forged_fas_naming_another_device_changes_nothing(nds_app, neighbour_table, firewall):
    _guest, page = online_guest(nds_app, neighbour_table, fas_for(mac="02:cc:00:00:00:12"))
    assert next_link(page) is None and "opennds_auth" not in page
    assert all(call[1] == GUEST_MAC for call in firewall.calls if call[0] == "allow")


@pytest.mark.parametrize("fas", ["%%%", "A" * 5000, fas_for(gateway="192.0.2.66:80")])
def test_garbage_fas_shows_the_normal_form(nds_app, neighbour_table, fas):
    _guest, page = online_guest(nds_app, neighbour_table, fas)
    assert next_link(page) is None


def test_without_opennds_the_fas_parameter_means_nothing(app, neighbour_table, gateway_is_local):
    _guest, page = online_guest(app, neighbour_table, fas_for())
    assert next_link(page) is None


def test_opennds_bounce_of_an_authenticated_browser_offers_the_original_page(nds_app,
                                                                              neighbour_table):
    guest, _page = online_guest(nds_app, neighbour_table, fas_for())
    page = guest.client.get("/", query_string={
        "tok": "x", "redir": "http://example.org/news", "status": "authenticated"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "You are online" in text
    assert 'href="http://example.org/news"' in text


def test_a_fas_with_plus_signs_put_in_the_url_as_is_is_read(nds_app, neighbour_table):
    # openNDS does not percent-encode its base64: a "+" in it arrives as a space. ASCII text
    # gives a "+" for a "~" (common in originurl: http://host/~user/) at every third byte.
    fas = next(f for f in (fas_for(origin=f"http%3a%2f%2fexample.org%2f{'x' * n}~me%2f")
                           for n in range(3)) if "+" in f)
    guest = Guest(nds_app, neighbour_table)
    assert guest.client.get("/?fas=" + fas).status_code == 200
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    page = guest.client.get(f"/wait/{guest.token}").get_data(as_text=True)
    assert "~me%2F" in next_link(page)


def test_a_mac_named_twice_in_a_batch_ends_as_the_later_change_says(ndsctl):
    backend = ndsctl.backend()
    backend.apply([("allow", GUEST_MAC, 600), ("revoke", GUEST_MAC)])
    assert ndsctl.calls() == [f"auth {GUEST_MAC} 10", f"deauth {GUEST_MAC}"]
    assert backend.list() == {}
