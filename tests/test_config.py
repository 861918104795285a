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



PUBLIC_URL = "portal.public_url must be an http:// or https:// address with a host"


@pytest.mark.parametrize("section, key, value, words", [
    ("admin", "login_limit", "five a minute", "admin.login_limit must be one limit"),
    ("admin", "login_limit", "5 per minute; 20 per hour", "admin.login_limit must be one limit"),
    ("admin", "login_limit", "0 per minute", "admin.login_limit must be one limit"),
    ("admin", "retention_days", 1_000_000, "admin.retention_days must be 1 to 36500"),
    ("admin", "retention_days", 0, "admin.retention_days must be 1 to 36500"),
    ("callback", "max_age_seconds", 0, "callback.max_age_seconds must be at least 60"),
    ("callback", "max_age_seconds", 59, "callback.max_age_seconds must be at least 60"),
    ("gateway", "script_timeout_seconds", 0, "gateway.script_timeout_seconds must be at least 1"),
    ("gateway", "tls_port", 65536, "gateway.tls_port must be a port number"),
    ("portal", "public_url", "https://", PUBLIC_URL),
    ("portal", "public_url", "http:///portal", PUBLIC_URL),
    ("portal", "public_url", "http://[fd00::1/", PUBLIC_URL),
    ("portal", "public_url", "ftp://192.168.50.1/", PUBLIC_URL),
    ("portal", "listen", "999.1.1.1:8080", "portal.listen must be HOST:PORT"),
    ("portal", "listen", "::1:8080", "portal.listen must be HOST:PORT"),  # IPv6 needs brackets
    ("portal", "listen", "[192.168.1.1]:8080", "portal.listen must be HOST:PORT"),
    ("portal", "listen", "my_gateway:8080", "portal.listen must be HOST:PORT"),
    ("portal", "listen", "-gw.lan:8080", "portal.listen must be HOST:PORT"),
    ("portal", "listen", "0.0.0.0:0", "portal.listen must be HOST:PORT"),
    ("portal", "listen", "0.0.0.0:65536", "portal.listen must be HOST:PORT"),
    ("portal", "listen", ":8080", "portal.listen must be HOST:PORT"),
    ("provider", "base_url", "https://[2001:db8::1", "provider.base_url: Enter a full address"),
])
def test_bad_values_are_named_with_their_key(section, key, value, words):
    cfg = config.load(EXAMPLE, environ={})
    cfg[section][key] = value
    found = config.problems(cfg, demo=True)
    assert [p for p in found if p.startswith(words)], found


@pytest.mark.parametrize("section, key, value", [
    ("admin", "login_limit", "10 per hour"),
    ("callback", "max_age_seconds", 60),
    ("gateway", "script_timeout_seconds", 1),
    ("gateway", "tls_port", 0),
    ("gateway", "tls_port", 8443),
    ("gateway", "tls_port", 65535),
    ("portal", "public_url", "https://portal.example.net/"),
    ("portal", "public_url", "http://[fd00::1]:8080/"),
    ("portal", "listen", "*:8080"),
    ("portal", "listen", "0.0.0.0:8080"),
    ("portal", "listen", "127.0.0.1:8080"),
    ("portal", "listen", "[::]:8080"),
    ("portal", "listen", "[fd00::1]:80"),
    ("portal", "listen", "localhost:8080"),
    ("portal", "listen", "gw-1.venue.lan:65535"),
])
def test_good_values_pass(section, key, value):
    cfg = config.load(EXAMPLE, environ={})
    cfg[section][key] = value
    assert config.problems(cfg, demo=True) == []


def test_a_negative_tls_port_is_refused_in_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[gateway]\ntls_port = -1\n")
    with pytest.raises(config.ConfigError, match="gateway.tls_port: must not be negative"):
        config.load(path, environ={})
    assert config.defaults()["gateway"]["tls_port"] == 0
