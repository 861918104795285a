"""The deploy files a gateway runs: systemd units that systemd accepts, hardened to an exposure of
at most 4 (systemd-analyze security), the portal as an unprivileged user with CAP_NET_ADMIN only
and after the clock is set; shell scripts shellcheck finds nothing in; a dnsmasq snippet that
changes nothing until its examples are uncommented."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ("callpass.service", "callpass-firewall.service")  # a gateway's
NODE_UNIT = "central/callpass-node.service"                 # a chain's node
ALL_UNITS = (*UNITS, NODE_UNIT)


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")


def setting(unit, key):
    return re.findall(rf"^{key}=(.*)$", (DEPLOY / unit).read_text(), re.M)


def test_systemd_accepts_the_units(tmp_path):
    need("systemd-analyze")
    for unit in ALL_UNITS:  # the ExecStart binary must exist: this test environment's callpass
        text = (DEPLOY / unit).read_text().replace("/opt/callpass/", f"{sys.prefix}/")
        (tmp_path / Path(unit).name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *(str(tmp_path / Path(unit).name) for unit in ALL_UNITS)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if "callpass" in line]
    assert not ours, ours


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_exposure_is_at_most_4(unit):
    need("systemd-analyze")
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(DEPLOY / unit)], capture_output=True, text=True)
    found = re.search(rf"Overall exposure level for {re.escape(Path(unit).name)}: ([\d.]+)",
                      done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 4.0


def test_a_node_runs_as_callpass_with_no_capability_at_all():
    assert setting(NODE_UNIT, "User") == ["callpass"]
    assert setting(NODE_UNIT, "CapabilityBoundingSet") == [""]
    assert not setting(NODE_UNIT, "AmbientCapabilities")
    assert setting(NODE_UNIT, "ProtectSystem") == ["strict"]


@pytest.mark.parametrize("unit", UNITS)
def test_runs_as_callpass_with_cap_net_admin_only(unit):
    assert setting(unit, "User") == ["callpass"]
    assert setting(unit, "AmbientCapabilities") == ["CAP_NET_ADMIN"]
    assert setting(unit, "CapabilityBoundingSet") == ["CAP_NET_ADMIN"]
    assert setting(unit, "NoNewPrivileges") == ["yes"]
    assert setting(unit, "ProtectSystem") == ["strict"]


def test_the_portal_starts_after_the_clock_and_the_table_does_not_wait_for_it():
    assert "time-sync.target" in setting("callpass.service", "After")[0].split()
    assert "time-sync.target" not in " ".join(setting("callpass-firewall.service", "After"))
    assert "network-pre.target" in setting("callpass-firewall.service", "Before")[0].split()
    assert setting("callpass.service", "StateDirectoryMode") == ["0700"]


def shell_scripts():
    return sorted(path for path in DEPLOY.rglob("*")
                  if path.is_file() and re.match(rb"#!\s*/bin/(ba|da)?sh\b", path.read_bytes()[:40]))


def test_every_shell_script_in_deploy_is_shellcheck_clean():
    need("shellcheck")
    scripts = shell_scripts()
    assert {"callpass-fw", "install", "install-system-packages", "callpass.init",
            "dhcp-captive"} <= {path.name for path in scripts}
    done = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_dnsmasq_snippet_changes_nothing_until_edited():
    text = (DEPLOY / "dnsmasq-callpass.conf").read_text()
    active = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert active == []
    announced = re.search(r'^#dhcp-option=114,"([^"]+)"$', text, re.M).group(1)
    assert len(announced.encode()) <= 255
    api = urlsplit(announced)
    assert api.scheme == "https" and api.path == "/api/captive"
    assert re.search(rf"^#address=/{re.escape(api.hostname)}/[\d.]+$", text, re.M)
