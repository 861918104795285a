"""One rule per setting: the config file and the admin form check each editable key the same way,
so a file the portal starts with is a form the admin can save, and the 31-day cap is one number."""

import re
from pathlib import Path

import pytest

from admin_support import admin, settings_form, stored_settings  # noqa: F401
from portal import config as config_module
from portal import settings
from portal import firewall

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "callpass-fw"
AT_THE_EDGES = {"portal": {"verification_minutes": 60, "session_minutes": 31 * 24 * 60,
                           "devices_per_phone": 50, "remember_days": 365,
                           "default_region": "UA"},
                "venue": {"name": "N" * 80, "terms_text": "T" * 10000, "require_terms": True}}


@pytest.fixture
def cfg(cfg):
    """The test config with every number at the edge of what is allowed."""
    for section, values in AT_THE_EDGES.items():
        cfg[section].update(values)
    return cfg


def test_a_file_at_the_limits_is_a_form_the_admin_can_save(app, admin):
    assert config_module.problems(app.extensions["callpass"].config) == []
    saved = admin.post("/admin/settings", settings_form(app))
    assert saved.status_code == 303
    assert "Nothing was changed." in admin.get("/admin/settings").get_data(as_text=True)
    changed = admin.post("/admin/settings", settings_form(app, **{"venue.name.en": "Café Fox"}))
    assert changed.status_code == 303
    assert stored_settings(app) == {"venue.name": "Café Fox"}


@pytest.mark.parametrize("key, value, words", [
    ("portal.verification_minutes", 61, "Enter a whole number from 1 to 60."),
    ("portal.session_minutes", 31 * 24 * 60 + 1, "Enter a whole number from 1 to 44640."),
    ("portal.devices_per_phone", 51, "Enter a whole number from 0 to 50."),
    ("portal.default_region", "XX", "Enter a two-letter country code such as RU, UA or KZ."),
    ("venue.name", "N" * 81, "At most 80 characters, please."),
    ("venue.terms_url", "terms.example", "Enter a full address starting with https://"),
    ("gateway.garden", ["10.0.0.1/8"], "has host bits set; did you mean 10.0.0.0/8?"),
])
def test_one_step_past_a_limit_is_refused_in_the_file_and_on_the_form(app, admin, key, value,
                                                                      words):
    section, _, name = key.partition(".")
    file_config = config_module.defaults()
    file_config[section][name] = value
    assert any(p.startswith(f"{key}: ") and words in p
               for p in config_module.problems(file_config, demo=True))
    typed = "\n".join(value) if isinstance(value, list) else str(value)
    field = key + ".en" if key in settings.PER_LANGUAGE else key  # the default language's field
    page = admin.post("/admin/settings", settings_form(app, **{field: typed}))
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    error = re.search(f'id="{re.escape(field)}-error" role="alert">([^<]*)<', html)
    assert error and words in error.group(1)
    assert stored_settings(app) == {}


def test_rules_across_keys_hold_in_the_file_too():
    file_config = config_module.defaults()
    file_config["venue"].update(require_terms=True, languages=["uk"], default_language="ru")
    found = config_module.problems(file_config, demo=True)
    assert "venue.require_terms: Add the terms (text or link) before asking guests to accept " \
           "them." in found
    assert "venue.default_language: Pick one of the languages offered." in found
    file_config["venue"]["languages"] = ["ru", "de"]
    assert "venue.languages: “de” is not one of ru, uk, en." in config_module.problems(
        file_config, demo=True)


def test_the_31_day_cap_is_the_firewall_scripts():
    script_cap = re.search(r"^MAX_SECONDS=(\d+)", SCRIPT.read_text(), re.MULTILINE)
    assert int(script_cap.group(1)) == firewall.MAX_SECONDS == config_module.MAX_SESSION_DAYS * 86400
