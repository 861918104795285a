"""The handler URL to paste into the SMSC account: built from callback.public_url (the portal's
address on the internet), with a warning when the provider could not reach it."""

import pytest

from admin_support import admin  # noqa: F401
from portal import config as config_module
from portal.admin import is_private_url

PUBLIC = "https://wifi.example.com/"


@pytest.fixture
def cfg(cfg, request):
    cfg["callback"]["public_url"] = getattr(request, "param", "")
    return cfg


def handler(page):
    return page.split('id="handler-url"')[1].split(">", 1)[1].split("</textarea>")[0]


def test_the_guests_lan_address_is_used_but_warned_about(app, admin):
    page = admin.get("/admin/").get_data(as_text=True)
    assert handler(page).startswith("http://localhost/callback/smsc/")
    assert 'id="handler-private"' in page and "callback.public_url" in page


@pytest.mark.parametrize("cfg", [PUBLIC], indirect=True)
def test_the_public_callback_address_builds_the_handler_url(app, admin):
    page = admin.get("/admin/").get_data(as_text=True)
    assert handler(page) == ("https://wifi.example.com/callback/smsc/"
                             "test-callback-token-0123456789?md5=test-checksum-secret")
    assert 'id="handler-private"' not in page


@pytest.mark.parametrize("cfg", ["http://192.168.1.1:8080/"], indirect=True)
def test_a_private_public_callback_address_is_warned_about(app, admin):
    page = admin.get("/admin/?lang=uk").get_data(as_text=True)
    assert handler(page).startswith("http://192.168.1.1:8080/callback/smsc/")
    assert "Це приватна адреса (callback.public_url)" in page


@pytest.mark.parametrize("url, is_private", [
    ("http://10.0.0.1/", True), ("http://[fd00::1]:8080/", True), ("http://router.lan/", True),
    ("http://localhost/", True), ("http://gateway/", True), ("http://100.64.0.1/", True),
    ("https://wifi.example.com/", False), ("https://8.8.8.8/", False),
    ("https://[2a00:1450::1]/", False),
])
def test_private_addresses(url, is_private):
    assert is_private_url(url) is is_private


def test_the_config_check_refuses_a_public_url_that_is_not_http():
    cfg = config_module.defaults()
    cfg["callback"]["public_url"] = "wifi.example.com"
    assert "callback.public_url must start with https:// or http://, or be empty" in \
        config_module.problems(cfg, demo=True)
