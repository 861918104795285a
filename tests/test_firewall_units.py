"""The service files agree on the firewall: at boot `callpass fw-up` creates table inet callpass
from the same config `serve` reads (gateway.lan, the port of portal.listen: the values callpass
uses when it recreates the table), and stopping never deletes it (with no table forwarding is
open, so that would fail open)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netns import Namespace, requirements_missing
from serve_support import write_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG = "/etc/callpass/callpass.toml"


def exec_start(unit):
    return re.search(r"^ExecStart=(.*)$", (DEPLOY / unit).read_text(), re.M).group(1)


def test_systemd_creates_the_table_from_the_config_and_never_deletes_it():
    unit = (DEPLOY / "callpass-firewall.service").read_text()
    assert exec_start("callpass-firewall.service") == f"/opt/callpass/bin/callpass fw-up --config {CONFIG}"
    assert exec_start("callpass.service") == f"/opt/callpass/bin/callpass serve --config {CONFIG}"
    assert not re.search(r"^Exec(Stop|StopPost|Reload)=", unit, re.M)
    assert "callpass-fw up" not in "".join(line for line in unit.splitlines()
                                           if not line.startswith("#"))


def test_openwrt_creates_the_table_from_the_config_and_never_deletes_it():
    init = (DEPLOY / "openwrt" / "callpass.init").read_text()
    assert f"CONFIG={CONFIG}\n" in init and "CALLPASS=/opt/callpass/bin/callpass\n" in init
    assert '"$CALLPASS" fw-up --config "$CONFIG" || return 1' in init
    assert 'procd_set_param command "$CALLPASS" serve --config "$CONFIG"' in init
    stop = init[init.index("stop_service()"):]
    stop = stop[:stop.index("\n}\n")]
    assert not re.search(r"^\s*[^#\s].*callpass-fw", stop, re.M)  # no command runs the script


RECORDER = """#!/bin/sh
printf '%s\\n' "$*" >> "$(dirname "$0")/calls"
"""


def recorder(folder):
    """A stand-in callpass-fw in folder that writes each call's arguments to folder/calls."""
    script = folder / "callpass-fw"
    script.write_text(RECORDER)
    script.chmod(0o755)
    return script


def fw_up(config, **environment):
    return subprocess.run([sys.executable, "-m", "portal", "fw-up", "--config", str(config)],
                          capture_output=True, text=True, env={**os.environ, **environment})


def test_fw_up_runs_the_script_with_the_configs_interface_and_port(tmp_path, database_url):
    script = recorder(tmp_path)
    config = write_config(tmp_path / "callpass.toml", database=database_url, port=8123,
                          listen_host="0.0.0.0", script=script,
                          sections={"gateway": {"lan": "guests0", "script": str(script)}})
    # A config serve would refuse (no provider account yet) still gets its table at boot.
    config.write_text(config.read_text().replace('login = "venue"', 'login = ""'))
    result = fw_up(config)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text() == "up --lan guests0 --portal-port 8123\n"

    config.write_text(config.read_text().replace('firewall = "script"', 'firewall = "opennds"'))
    result = fw_up(config)
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert (tmp_path / "calls").read_text().count("\n") == 1

    config.write_text(config.read_text().replace('firewall = "opennds"', 'firewall = "script"')
                      .replace('lan = "guests0"', 'lan = "eth0; reboot"'))
    result = fw_up(config)
    assert result.returncode == 2 and "gateway.lan" in result.stderr
    assert (tmp_path / "calls").read_text().count("\n") == 1


def test_fw_up_makes_the_table_even_when_the_rest_of_the_config_is_wrong(tmp_path, database_url):
    """At boot a typo anywhere in the file must not leave guests unchecked: the table comes up
    from what could be read (or, for a file that is not TOML at all, from the defaults), then
    the problems are listed and the exit code says something is wrong."""
    script = recorder(tmp_path)
    config = write_config(tmp_path / "callpass.toml", database=database_url, port=8123,
                          listen_host="0.0.0.0", script=script,
                          sections={"gateway": {"lan": "guests0", "script": str(script)},
                                    "venue": {"welcom": "Hello"}})
    result = fw_up(config)
    assert result.returncode == 2 and "unknown key venue.welcom" in result.stderr
    assert (tmp_path / "calls").read_text() == "up --lan guests0 --portal-port 8123\n"

    config.write_text(config.read_text() + '\n[venue]\nwelcome = "He said "hi""\n')
    result = fw_up(config, CALLPASS_GATEWAY_SCRIPT=str(script))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    assert (tmp_path / "calls").read_text().splitlines()[-1] == "up --lan br-lan --portal-port 8080"

    assert fw_up(tmp_path / "missing.toml").returncode == 2  # no file: nothing to go on
    assert (tmp_path / "calls").read_text().count("\n") == 2


def test_fw_up_opens_the_tls_port_the_config_names(tmp_path, database_url):
    script = recorder(tmp_path)
    config = write_config(tmp_path / "callpass.toml", database=database_url, port=8123,
                          listen_host="0.0.0.0", script=script,
                          sections={"gateway": {"lan": "guests0", "tls_port": 443}})
    result = fw_up(config)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text() == "up --lan guests0 --portal-port 8123 --tls-port 443\n"


def test_the_worker_makes_the_chains_for_its_config_when_it_starts(tmp_path):
    """Restarting callpass after changing gateway.lan (or upgrading the script) applies it: the
    worker's first pass runs `up` (which keeps the sets). Later passes only check the table, and
    recreate it, loudly, when it is gone."""
    from portal import firewall_sync, storage
    from portal.firewall import NoopFirewall

    engine = storage.connect(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    storage.upgrade(engine)
    firewall = NoopFirewall()
    table = {"lan": "guests0", "portal_port": 8123, "tls_port": 443}
    worker = firewall_sync.FirewallWorker(engine, firewall, table=table)
    assert worker.attempt()
    assert [call for call in firewall.calls if call[0] == "up"] == [("up", "guests0", 8123, None)]
    worker._check_due = 0.0
    assert worker.attempt()
    assert [call[0] for call in firewall.calls].count("up") == 1
    assert worker.recreated_at is None

    firewall.down()  # `nft flush ruleset`
    worker._check_due = 0.0
    assert worker.attempt()
    assert [call[0] for call in firewall.calls].count("up") == 2
    assert worker.recreated_at is not None


def test_the_script_needs_only_cap_net_admin():
    """What the units grant: an unprivileged user with CAP_NET_ADMIN alone runs callpass-fw."""
    if reason := requirements_missing():
        pytest.skip(reason)
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    with_cap = ["--inh-caps=+net_admin", "--ambient-caps=+net_admin", "--bounding-set=-all,+net_admin"]
    script = str(DEPLOY / "callpass-fw")
    with Namespace("caps") as ns:
        done = ns.run(*as_nobody, *with_cap, script, "up", "--lan", "br-lan", "--portal-port", "8080")
        assert done.returncode == 0, done.stderr
        done = ns.run(*as_nobody, *with_cap, script, "allow", "02:00:00:00:00:01", "60")
        assert done.returncode == 0, done.stderr
        assert ns.run(*as_nobody, script, "list").returncode == 1  # without it: refused
        assert "02:00:00:00:00:01" in ns.run(script, "list", check=True).stdout
