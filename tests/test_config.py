"""Configuration: the example file, environment overrides, and refusing unsafe settings."""

import subprocess
import sys
from pathlib import Path

import pytest

from portal import config

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "callpass.toml"


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    for section, values in config.DEFAULTS.items():
        assert f"[{section}]" in text
        for key in values:
            assert f"\n{key} = " in text, f"{section}.{key} missing from deploy/callpass.toml"


def test_example_loads_but_is_refused_until_secrets_are_set():
    cfg = config.load(EXAMPLE, environ={})
    found = config.problems(cfg)
    assert any(p.startswith("portal.secret_key") for p in found)
    assert any(p.startswith("callback.token") for p in found)
    assert any(p.startswith("provider.login") for p in found)
    assert config.problems(cfg, demo=True) == []


def test_environment_overrides_file():
    cfg = config.load(EXAMPLE, environ={"CALLPASS_PORTAL_SESSION_MINUTES": "60",
                                        "CALLPASS_PROVIDER_FALLBACK_URLS": "http://a, http://b",
                                        "CALLPASS_PROVIDER_APIKEY": "k"})
    assert cfg["portal"]["session_minutes"] == 60
    assert cfg["provider"]["fallback_urls"] == ["http://a", "http://b"]
    assert cfg["provider"]["apikey"] == "k"


@pytest.mark.parametrize("text, words", [
    ("[portal]\nsession_minutes = 'long'\n", "portal.session_minutes: must be a whole number"),
    ("[portal]\nsesion_minutes = 5\n", "unknown key portal.sesion_minutes"),
    ("[nonsense]\n", "unknown section [nonsense]"),
    ("[portal\n", "not valid TOML"),
])
def test_bad_files_name_the_problem(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, environ={})
    assert words in str(caught.value)


def test_venue_texts_may_be_given_per_language(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[venue]\nname = "Кафе"\nwelcome = { ru = "Привет!", en = "Hello!" }\n')
    cfg = config.load(path, environ={})
    assert cfg["venue"]["name"] == "Кафе" and cfg["venue"]["welcome"]["en"] == "Hello!"
    assert config.problems(cfg, demo=True) == []
    path.write_text('[venue]\nname = { en = "Cafe", de = "Café" }\n')
    assert "venue.name: “de” is not one of ru, uk, en." in config.problems(
        config.load(path, environ={}), demo=True)
    path.write_text('[venue]\nname = { en = "Cafe" }\n')  # the default language (ru) has none
    assert "venue.name.ru: This cannot be empty." in config.problems(
        config.load(path, environ={}), demo=True)


def test_bad_environment_value_is_named():
    with pytest.raises(config.ConfigError, match="CALLPASS_PORTAL_SESSION_MINUTES"):
        config.load(None, environ={"CALLPASS_PORTAL_SESSION_MINUTES": "ten"})


def test_check_config_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(EXAMPLE.read_text()
                    .replace('secret_key = ""', 'secret_key = "' + "x" * 40 + '"')
                    .replace('token = ""', 'token = "' + "t" * 24 + '"')
                    .replace('apikey = ""', 'apikey = "k"'))
    run = lambda path: subprocess.run([sys.executable, "-m", "portal", "check-config", "--config",
                                       str(path)], capture_output=True, text=True, timeout=60)
    ok = run(good)
    assert ok.returncode == 0, ok.stderr
    bad = run(EXAMPLE)
    assert bad.returncode != 0
    assert "portal.secret_key" in bad.stderr and "callback.token" in bad.stderr
    missing = run(tmp_path / "absent.toml")
    assert missing.returncode != 0 and "does not exist" in missing.stderr

