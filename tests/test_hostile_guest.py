"""A hostile guest on the same LAN gains nothing: no access on someone else's call, no lock-out
of the number's owner, no way around the limits by taking more addresses.

The attacker types the victim's phone number. The provider's notification names only the phone
the call came from, so whoever waits for that phone when the victim calls would get online on
the victim's call, recorded under the victim's number. One device waits per phone at a time.
"""

import threading
import time

from conftest import add_neighbour, close_window
from sqlalchemy import select

from portal import storage

VICTIM_PHONE = "+79161234567"
VICTIM_DIGITS = "79161234567"


def test_a_second_device_cannot_wait_for_a_number_someone_is_waiting_for(make_guest, firewall):
    victim = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    attacker = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    assert victim.start(VICTIM_PHONE).status_code == 303

    refused = attacker.start(VICTIM_PHONE)
    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    assert "already waiting for a call on another device, for 5 more minutes" in page
    assert attacker.token is None

    assert victim.call(VICTIM_DIGITS).data == b"OK"
    assert victim.status()["access"] == "online"
    allowed = {call[1] for call in firewall.calls if call[0] == "allow"}
    assert allowed == {victim.mac}


def test_the_victims_call_never_opens_the_device_that_typed_the_number_first(app, make_guest,
                                                                           firewall):
    """The attacker waits first: the owner is told the number is taken, and with
    devices_per_phone = 1 nothing of the owner's is touched; only the attacker waits."""
    from portal import settings

    settings.save(app.extensions["callpass"], {"portal.devices_per_phone": 1}, "test")
    attacker = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    victim = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    assert attacker.start(VICTIM_PHONE).status_code == 303
    answer = victim.start(VICTIM_PHONE)
    assert answer.status_code == 409
    assert victim.token is None
    assert firewall.calls == []
    with app.extensions["callpass"].engine.connect() as conn:
        waiting = conn.execute(select(storage.verification).where(
            storage.verification.c.state == "pending")).all()
    assert [row.mac for row in waiting] == [attacker.mac]


def test_the_refusal_is_in_the_guests_language(make_guest):
    victim = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    attacker = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    assert attacker.start(VICTIM_PHONE).status_code == 303
    answer = victim.client.post("/", data={"phone": VICTIM_PHONE},
                                headers={"Accept-Language": "ru"})
    assert answer.status_code == 409
    assert "уже ждёт звонка на другом устройстве" in answer.get_data(as_text=True)


def test_the_same_device_asking_again_gets_its_own_wait_page_without_a_new_request(guest,
                                                                                   simulator):
    assert guest.start(VICTIM_PHONE).status_code == 303
    first_token, asked = guest.token, simulator.state.request_count()
    again = guest.start("8 916 123-45-67")
    assert again.status_code == 303 and guest.token == first_token
    assert simulator.state.request_count() == asked


def test_holding_a_number_again_and_again_keeps_the_owner_out_for_one_window_only(app,
                                                                                 make_guest):
    attacker = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    victim = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    assert attacker.start(VICTIM_PHONE).status_code == 303
    assert victim.start(VICTIM_PHONE).status_code == 409
    close_window(app, attacker.token)

    # The attacker's window ran out while the owner was waiting to ask: the attacker steps aside.
    again = attacker.start(VICTIM_PHONE)
    assert again.status_code == 429
    assert "can ask for it again in" in again.get_data(as_text=True)
    assert victim.start(VICTIM_PHONE).status_code == 303
    assert victim.call(VICTIM_DIGITS).data == b"OK"
    assert victim.status()["access"] == "online"


def test_a_guest_who_missed_the_call_can_ask_again_at_once_when_nobody_else_asked(app, guest):
    assert guest.start(VICTIM_PHONE).status_code == 303
    close_window(app, guest.token)
    assert guest.start(VICTIM_PHONE).status_code == 303


def test_two_devices_asking_at_the_same_instant_get_one_wait(make_guest, simulator):
    """The provider is slow, so both requests are in flight at once; the database decides."""
    simulator.state.set_knobs(latency=0.5)
    devices = [make_guest("10.77.1.10", "02:aa:00:00:00:10"),
               make_guest("10.77.1.66", "02:bb:00:00:00:66")]
    codes = []
    barrier = threading.Barrier(2)

    def ask(device):
        barrier.wait()
        codes.append(device.start(VICTIM_PHONE).status_code)

    threads = [threading.Thread(target=ask, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(codes) == [303, 409]


def test_a_double_tap_asks_the_provider_once_and_lands_on_one_wait_page(make_guest, simulator):
    """The same device posts the form twice while the slow provider answers the first: the
    second tap waits for the first and goes to its wait page (not "waiting on another
    device"); the provider is asked once."""
    simulator.state.set_knobs(latency=0.5)
    taps = [make_guest("10.77.1.10", "02:aa:00:00:00:10") for _ in range(2)]
    answers = []
    barrier = threading.Barrier(2)

    def tap(device):
        barrier.wait()
        answers.append(device.start(VICTIM_PHONE))

    threads = [threading.Thread(target=tap, args=(t,)) for t in taps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    assert simulator.state.request_count() == 1


def test_a_tap_behind_one_that_asks_too_long_is_told_to_try_again(app, make_guest, monkeypatch):
    """A device's request behind its other one that is asking the provider waits at most as
    long as a call may take; then it gets "busy, try again", not a thread held for ever."""
    from portal.provider import SmscClient

    monkeypatch.setattr(SmscClient, "longest_call_seconds", 0.2)
    asking = app.extensions["callpass"].asking
    device = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    with asking.hold(device.mac, 1):
        answer = device.start(VICTIM_PHONE)
    assert answer.status_code == 503
    assert "Please try again in a few seconds" in answer.get_data(as_text=True)
    assert device.start(VICTIM_PHONE).status_code == 303
    assert asking._locks == {}


def test_one_devices_parallel_posts_hold_one_provider_slot_and_count(app, make_guest, simulator):
    """Eight posts at once from one device, each with another number, to a slow provider: one
    asks, one waits behind it, the rest are told to try again at once. Nobody else is told the
    portal is busy meanwhile, and each number that reached the provider was counted."""
    simulator.state.set_knobs(latency=1.0)
    hog = make_guest("10.77.1.66", "02:bb:00:00:00:66")
    other = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    codes = []
    barrier = threading.Barrier(8)

    def post(number):
        client = app.test_client()
        client.environ_base.update(REMOTE_ADDR=hog.ip)
        barrier.wait()
        codes.append(client.post("/", data={"phone": number}).status_code)

    threads = [threading.Thread(target=post, args=(f"+7916123{n:04d}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    assert other.start("+79169999999").status_code == 303
    for thread in threads:
        thread.join(10)
    assert sorted(codes) == [303, 303] + [503] * 6
    assert simulator.state.request_count() == 3  # the hog's two and the other guest's one
    later = [hog.start(f"+7916124{n:04d}").status_code for n in range(5)]
    assert later == [303, 303, 303, 429, 429]  # limit_per_device: 5 a minute, two used


def test_a_call_for_a_phone_two_devices_wait_for_opens_nobody(app, firewall, make_guest):
    """Rows from before one-device-per-phone: an ambiguous call is nobody's."""
    from datetime import timedelta

    from portal.storage import utcnow

    now = utcnow()
    with storage.begin(app.extensions["callpass"].engine) as conn:
        for i, mac in enumerate(("02:aa:00:00:00:10", "02:bb:00:00:00:66")):
            conn.execute(storage.verification.insert().values(
                token=f"legacy-{i}", phone=VICTIM_PHONE, mac=mac, ip=f"10.77.1.{i + 1}",
                call_number="+74950000000", state="pending", created_at=now,
                expires_at=now + timedelta(minutes=5)))
    guest = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    assert guest.call(VICTIM_DIGITS).data == b"OK"
    assert firewall.calls == []


def test_the_device_limit_follows_the_mac_across_addresses(make_guest):
    """One MAC with many addresses is one device (limit_per_device: 5 per minute)."""
    codes = []
    for i in range(7):
        device = make_guest(f"10.77.2.{i + 1}", "02:bb:00:00:00:66")
        codes.append(device.start(f"+7916765432{i}").status_code)
    assert codes == [303] * 5 + [429, 429]


def test_a_third_party_cannot_use_up_the_owners_allowance(app, make_guest):
    """limit_per_phone is per device: three strangers asking for a number (each for one window)
    leave its owner free to ask."""
    for i in range(3):
        stranger = make_guest(f"10.77.3.{i + 1}", f"02:bb:00:00:03:{i:02x}")
        assert stranger.start(VICTIM_PHONE).status_code == 303
        close_window(app, stranger.token)
    owner = make_guest("10.77.1.10", "02:aa:00:00:00:10")
    started = time.monotonic()
    assert owner.start(VICTIM_PHONE).status_code == 303
    assert time.monotonic() - started < 5


def test_health_tells_a_guest_only_whether_the_portal_is_healthy(guest, app, simulator):
    answer = guest.client.get("/healthz")
    assert answer.get_json() == {"ok": True}
    local = app.test_client().get("/healthz", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert local.get_json()["provider"]["balance"]


def test_a_flood_of_health_checks_runs_no_firewall_script_and_asks_the_provider_once(
        guest, simulator, app, firewall):
    asked = simulator.state.request_count()
    for _ in range(200):
        assert guest.client.get("/healthz").status_code == 200
    assert simulator.state.request_count() == asked + 1  # balance, once a minute at most
    assert firewall.calls == []


def test_a_device_on_the_wan_side_cannot_sign_in(app, neighbour_table, client):
    """Its neighbour entry is on the upstream interface, not gateway.lan (br-lan)."""
    add_neighbour(neighbour_table, "198.51.100.7", "02:dd:00:00:00:07", device="eth0")
    answer = client.post("/", data={"phone": VICTIM_PHONE},
                         environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert answer.status_code == 403
    with app.extensions["callpass"].engine.connect() as conn:
        assert conn.execute(select(storage.verification)).all() == []
