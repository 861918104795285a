"""No admin input opens the internet to unverified guests: the walled garden takes only narrow
networks, a bounded number of them, from the settings page and from the config file alike."""

import pytest
from click.testing import CliRunner

from admin_support import (admin, audit_rows, command_config, settings_form,  # noqa: F401
                           stored_settings)
from portal import config as config_module
from portal import settings
from portal.cli import main

HALVES = ["0.0.0.0/1\n128.0.0.0/1", "::/1\n8000::/1", "10.0.0.0/15", "2001:db8::/31"]


def garden_calls(firewall):
    return [call for call in firewall.calls if call[0] == "garden"]


@pytest.mark.parametrize("typed", HALVES)
def test_networks_wider_than_a_16_or_a_32_are_refused_and_nothing_changes(app, admin, firewall,
                                                                          typed):
    page = admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": typed, "venue.name.en": "Café Fox"}))
    assert page.status_code == 400
    first = typed.split("\n")[0]
    assert (f'id="gateway.garden-error" role="alert">“{first}” is too wide: it would let '
            "unverified guests reach a large part of the internet. Use networks of /16 or "
            "narrower for IPv4 and /32 or narrower for IPv6.") in page.get_data(as_text=True)
    assert stored_settings(app) == {}
    assert garden_calls(firewall) == []
    assert [r.action for r in audit_rows(app)] == ["login"]


def test_a_16_and_a_32_are_the_widest_taken(app, admin, firewall):
    saved = admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": "10.20.0.0/16\n2001:db8::/32"}))
    assert saved.status_code == 303
    assert stored_settings(app)["gateway.garden"] == ["10.20.0.0/16", "2001:db8::/32"]
    assert garden_calls(firewall) == [("garden", "add", "10.20.0.0/16"),
                                      ("garden", "add", "2001:db8::/32")]


def test_the_garden_holds_at_most_64_entries(app, admin, firewall):
    entries = [f"203.0.113.{n}" for n in range(65)]
    page = admin.post("/admin/settings", settings_form(app, **{"gateway.garden": "\n".join(entries)}))
    assert page.status_code == 400
    assert "At most 64 entries, please." in page.get_data(as_text=True)
    assert stored_settings(app) == {} and garden_calls(firewall) == []
    assert admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": "\n".join(entries[:64])})).status_code == 303


def test_the_config_check_and_serve_refuse_a_wide_garden(app, tmp_path):
    path = command_config(tmp_path, app, sections={
        "gateway": {"garden": ["203.0.113.0/24", "0.0.0.0/1", "128.0.0.0/1"]}})
    for command in ("check-config", "serve"):
        result = CliRunner().invoke(main, [command, "--config", path])
        assert result.exit_code == 2, (command, result.output)
        assert "gateway.garden: “0.0.0.0/1” is too wide" in result.output, command

    cfg = config_module.defaults()
    cfg["gateway"]["garden"] = ["::/1"]
    assert any("“::/1” is too wide" in problem for problem in config_module.problems(cfg))
    cfg["gateway"]["garden"] = [f"198.51.100.{n}" for n in range(65)]
    assert "gateway.garden: At most 64 entries, please." in config_module.problems(cfg)
    cfg["gateway"]["garden"] = ["198.51.100.0/24", "2001:db8::/48"]
    assert not [p for p in config_module.problems(cfg) if p.startswith("gateway.garden")]


def test_a_wide_entry_stored_by_an_older_version_is_not_pushed_at_start(app, firewall):
    svc = app.extensions["callpass"]
    settings.save(svc, {"gateway.garden": ["0.0.0.0/1", "203.0.113.0/24"]}, "old version")
    with app.app_context():
        failures = settings.sync_garden(svc)
    # `callpass-fw up` keeps the garden across restarts, so the old entry is taken out.
    assert garden_calls(firewall) == [("garden", "del", "0.0.0.0/1"),
                                      ("garden", "add", "203.0.113.0/24")]
    assert len(failures) == 1
    assert failures[0].startswith("removed from the firewall: “0.0.0.0/1” is too wide")


@pytest.mark.parametrize("typed, inner, outer", [
    ("10.0.0.0/16\n10.0.1.0/24", "10.0.1.0/24", "10.0.0.0/16"),
    ("203.0.113.7\n198.51.100.0/24\n203.0.113.0/24", "203.0.113.7/32", "203.0.113.0/24"),
    ("2001:db8::/32\n2001:db8:1::/48", "2001:db8:1::/48", "2001:db8::/32"),
])
def test_an_entry_within_another_is_refused_naming_both(app, admin, firewall, tmp_path, typed,
                                                       inner, outer):
    # nft refuses the second of two overlapping intervals, so such a garden would never apply.
    words = (f"“{inner}” lies within “{outer}”: the firewall cannot hold both, and “{outer}” "
             f"already lets guests reach it. Remove “{inner}”.")
    page = admin.post("/admin/settings", settings_form(app, **{"gateway.garden": typed}))
    assert page.status_code == 400
    assert f'id="gateway.garden-error" role="alert">{words}' in page.get_data(as_text=True)
    assert stored_settings(app) == {} and garden_calls(firewall) == []

    path = command_config(tmp_path, app, sections={"gateway": {"garden": typed.split("\n")}})
    result = CliRunner().invoke(main, ["check-config", "--config", path])
    assert result.exit_code == 2 and f"gateway.garden: {words}" in result.output


def test_networks_of_both_families_and_neighbours_do_not_overlap(app):
    cfg = config_module.defaults()
    cfg["gateway"]["garden"] = ["10.0.0.0/24", "10.0.1.0/24", "::ffff:10.0.0.0/120", "10.0.2.1"]
    assert not [p for p in config_module.problems(cfg) if p.startswith("gateway.garden")]


def test_an_entry_taken_out_of_the_config_file_leaves_the_firewall(app, firewall):
    svc = app.extensions["callpass"]
    svc.config["gateway"]["garden"] = ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]
    assert settings.sync_garden(svc) == []
    # The file is edited (one entry out, one widened) and callpass restarted or fw-sync run.
    svc.config["gateway"]["garden"] = ["192.0.0.0/16", "2001:db8::/32"]
    del firewall.calls[:]
    assert settings.sync_garden(svc) == []
    assert garden_calls(firewall) == [("garden", "del", "192.0.2.0/24"),
                                      ("garden", "del", "198.51.100.7/32"),
                                      ("garden", "add", "192.0.0.0/16"),
                                      ("garden", "add", "2001:db8::/32")]
    # Once out, an entry is not taken out again.
    del firewall.calls[:]
    assert settings.sync_garden(svc) == []
    assert garden_calls(firewall) == [("garden", "add", "192.0.0.0/16"),
                                      ("garden", "add", "2001:db8::/32")]


def test_the_settings_page_and_the_file_share_what_was_pushed(app, admin, firewall):
    svc = app.extensions["callpass"]
    svc.config["gateway"]["garden"] = ["192.0.2.0/24"]
    assert settings.sync_garden(svc) == []
    # The page's garden replaces the file's: the file's entry leaves the firewall.
    assert admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": "198.51.100.0/24"})).status_code == 303
    assert garden_calls(firewall)[-2:] == [("garden", "del", "192.0.2.0/24"),
                                           ("garden", "add", "198.51.100.0/24")]
    # The page widens its entry; a sync later deletes nothing more (the /24 is gone already).
    assert admin.post("/admin/settings", settings_form(
        app, **{"gateway.garden": "198.51.0.0/16"})).status_code == 303
    del firewall.calls[:]
    assert settings.sync_garden(svc) == []
    assert garden_calls(firewall) == [("garden", "add", "198.51.0.0/16")]
