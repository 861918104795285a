"""The firewall never fails open silently, and guests never reach the provider: the worker's
table check and recreation, and the provider's addresses, on the no-op firewall (the real
nftables version of the same story is in test_gateway.py)."""

import logging

import pytest
from admin_support import admin  # noqa: F401  (fixture)
from conftest import open_session

from portal import provider_hosts, settings
from portal.firewall_sync import CHECK_SECONDS

MAC = "02:cc:00:00:00:31"


@pytest.fixture
def worker(app):
    return app.extensions["callpass"].firewall_worker


def test_a_vanished_table_is_made_again_with_everything_in_it(app, firewall, worker, caplog):
    svc = app.extensions["callpass"]
    settings.save(svc, {"gateway.garden": ["192.0.2.0/24"]}, "admin")
    open_session(app, MAC, "10.77.0.31", "+79161234567", 30)
    worker.block_provider(["198.51.100.7", "2001:db8::7"])
    assert worker.attempt()
    assert firewall.provider_addresses == ["198.51.100.7", "2001:db8::7"]
    assert worker.status()["recreated_at"] is None

    firewall.down()  # what `nft flush ruleset` does to the table
    firewall.calls.clear()
    worker._check_due = 0.0  # the next check is due (they run every CHECK_SECONDS)
    with caplog.at_level(logging.ERROR):
        assert worker.attempt()

    assert firewall.calls[0] == ("up", "br-lan", 8080, None)
    assert ("garden", "add", "192.0.2.0/24") in firewall.calls
    assert ("provider", ("198.51.100.7", "2001:db8::7")) in firewall.calls
    assert 29 * 60 < firewall.list()[MAC] <= 30 * 60
    assert worker.status()["recreated_at"] is not None and worker.status()["ok"]
    assert any("table inet callpass is missing" in r.message for r in caplog.records
               if r.levelno == logging.ERROR)

    # A table that is there is left alone.
    firewall.calls.clear()
    worker._check_due = 0.0
    assert worker.attempt()
    assert not [call for call in firewall.calls if call[0] in ("up", "garden", "provider")]


def test_the_table_is_checked_every_few_seconds_not_on_every_pass(app, firewall, worker,
                                                                    monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("portal.firewall_sync.time.monotonic", lambda: now[0])
    assert worker.attempt()
    firewall.down()
    assert worker.attempt()
    assert not firewall.is_complete()  # not checked yet
    now[0] += CHECK_SECONDS
    assert worker.attempt()
    assert firewall.is_complete() and worker.status()["recreated_at"] is not None


def test_provider_addresses_are_pushed_when_they_change(worker, firewall):
    worker.block_provider(["198.51.100.7"])
    worker.block_provider(["198.51.100.7"])
    assert worker.attempt()
    worker.block_provider(["198.51.100.7"])
    assert worker.attempt()
    assert [call for call in firewall.calls if call[0] == "provider"] == [
        ("provider", ("198.51.100.7",))]
    with pytest.raises(ValueError):
        worker.block_provider(["smsc.ru"])


def test_provider_hosts_are_the_hosts_of_every_url():
    provider = {"base_url": "https://smsc.ru/", "fallback_urls": ["https://www2.smsc.ru",
                                                                  "http://127.0.0.1:8081",
                                                                  "http://[2001:db8::5]:81/x",
                                                                  "https://SMSC.ru"]}
    assert provider_hosts.hosts(provider) == ["127.0.0.1", "2001:db8::5", "smsc.ru", "www2.smsc.ru"]
    assert provider_hosts.resolve("127.0.0.1") == ["127.0.0.1"]
    assert provider_hosts.resolve("localhost")  # the system resolver answers for a name


def test_provider_addresses_refresh_when_due_or_when_the_hosts_change(monkeypatch):
    now = [1000.0]
    answers = {"smsc.ru": ["192.0.2.1"], "www2.smsc.ru": ["192.0.2.2", "2001:db8::2"]}

    def resolve(host):
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]

    monkeypatch.setattr(provider_hosts.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(provider_hosts, "resolve", resolve)
    addresses = provider_hosts.ProviderAddresses()
    provider = {"base_url": "https://smsc.ru", "fallback_urls": ["https://www2.smsc.ru"]}
    assert addresses.update(provider) == ["192.0.2.1", "192.0.2.2", "2001:db8::2"]
    assert addresses.update(provider) is None  # not due yet

    answers["smsc.ru"] = ["192.0.2.11"]
    del answers["www2.smsc.ru"]  # a passing DNS failure keeps what was known
    now[0] += provider_hosts.REFRESH_SECONDS
    assert addresses.update(provider) == ["192.0.2.11", "192.0.2.2", "2001:db8::2"]

    # The admin names another provider: resolved at once; a failure is retried within a minute.
    other = {"base_url": "https://smsc.kz", "fallback_urls": []}
    assert addresses.update(other) == []
    answers["smsc.kz"] = ["203.0.113.5"]
    assert addresses.update(other) is None
    now[0] += provider_hosts.RETRY_SECONDS
    assert addresses.update(other) == ["203.0.113.5"]


def test_the_dashboard_says_when_the_table_was_recreated(app, firewall, worker, admin):  # noqa: F811
    assert "firewall-recreated" not in admin.get("/admin/?lang=en").get_data(as_text=True)
    firewall.down()
    worker._check_due = 0.0
    assert worker.attempt()
    page = admin.get("/admin/?lang=en").get_data(as_text=True)
    assert "firewall-recreated" in page
    assert "The firewall table was missing and callpass recreated it at" in page
    assert worker.status()["recreated_at"].strftime("%Y-%m-%d %H:%M:%S UTC") in page
