"""The UniFi backend against a stand-in controller built from the documented protocol (no real
controller runs here): classic and UniFi OS logins, authorize-guest on a confirmed call,
unauthorize-guest when the session ends, a controller that forgot us, and clear failures."""

import pytest
from unifi_standin import StandInController

from portal import create_app, sessions, storage
from portal.firewall import FirewallError
from portal.unifi import UniFiBackend


@pytest.fixture(params=["classic", "os"])
def controller(request):
    standin = StandInController(mode=request.param).start()
    yield standin
    standin.stop()


def backend_for(controller, password="unifi-password"):
    return UniFiBackend(controller.url, "callpass", password, site="default")


def test_allow_authorises_the_guest_for_its_minutes_and_revoke_takes_it_back(controller):
    backend = backend_for(controller)
    backend.apply([("allow", "02:00:00:00:00:10", 3601), ("revoke", "02:00:00:00:00:11")])
    assert controller.commands == [
        {"cmd": "authorize-guest", "mac": "02:00:00:00:00:10", "minutes": 61},
        {"cmd": "unauthorize-guest", "mac": "02:00:00:00:00:11"}]
    assert controller.logins == 1  # one login for the batch


def test_a_controller_that_forgot_the_login_is_logged_in_to_again(controller):
    backend = backend_for(controller)
    backend.apply([("allow", "02:00:00:00:00:10", 60)])
    controller.forget_logins()
    backend.apply([("allow", "02:00:00:00:00:12", 60)])
    assert len(controller.commands) == 2 and controller.logins == 2


def test_wrong_credentials_and_an_unreachable_controller_are_clear_failures(controller):
    with pytest.raises(FirewallError, match="refused the login|login failed"):
        backend_for(controller, password="wrong").apply([("allow", "02:00:00:00:00:10", 60)])
    with pytest.raises(FirewallError, match="not reachable"):
        UniFiBackend("http://127.0.0.1:9", "u", "p").apply([("allow", "02:00:00:00:00:10", 60)])
    assert controller.commands == []


def test_a_confirmed_call_authorises_the_guest_on_the_controller(cfg, neighbour_table, controller):
    """The whole path through the desired-state core: the call, the worker, the controller."""
    from conftest import Guest

    cfg["gateway"]["firewall"] = "unifi"
    cfg["unifi"].update(url=controller.url, username="callpass", password="unifi-password")
    app = create_app(cfg)
    storage.upgrade(app.extensions["callpass"].engine)
    guest = Guest(app, neighbour_table)
    assert guest.start("+79161234567").status_code == 303
    guest.call("79161234567")
    assert guest.status()["access"] == "online"
    [command] = controller.commands
    assert command["cmd"] == "authorize-guest" and command["mac"] == guest.mac
    assert 239 <= command["minutes"] <= 240

    engine = app.extensions["callpass"].engine
    sessions.end_session(engine, sessions.active_session(engine, guest.mac).id, "admin")
    app.extensions["callpass"].firewall_worker.apply_pending()
    assert controller.commands[-1] == {"cmd": "unauthorize-guest", "mac": guest.mac}
    engine.dispose()
