"""portal.firewall: ScriptFirewall driving the real script in a namespace, its input checks,
NoopFirewall and from_config."""

import stat
import time
from pathlib import Path

import pytest

import netns
from portal import create_app, settings, storage
from portal import firewall as firewall_module
from portal.firewall import FirewallError, NoopFirewall, ScriptFirewall, from_config, normalise_mac

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "callpass-fw"
MAC = "02:cc:00:00:00:11"


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture(scope="module")
def gateway_ns():
    """A bare namespace to run nft in (the LAN interface need not exist for the ruleset)."""
    if reason := netns.requirements_missing():
        pytest.skip(reason)
    with netns.Namespace("gateway") as namespace:
        yield namespace


@pytest.fixture
def fw(gateway_ns, tmp_path):
    """ScriptFirewall whose script is a wrapper running deploy/callpass-fw in the namespace."""
    wrapper = write_script(tmp_path / "callpass-fw",
                           f'exec ip netns exec {gateway_ns.name} {SCRIPT} "$@"\n')
    fw = ScriptFirewall(wrapper, timeout_seconds=10)
    fw.down()
    yield fw
    fw.down()


@pytest.fixture
def recorder(tmp_path):
    """A stand-in script that only logs its arguments (one line per run)."""
    log = tmp_path / "runs.log"
    script = write_script(tmp_path / "record", f'printf "%s\\n" "$*" >> {log}\necho "[]"\n')
    return ScriptFirewall(script), log


@pytest.mark.netns
def test_script_firewall_drives_the_real_script(fw):
    assert not fw.is_healthy()  # no table yet
    fw.up("br-lan", 2050)
    assert fw.is_healthy()
    assert fw.list() == {}

    fw.allow("02-CC-00-00-00-11", 600)
    fw.allow("02:cc:00:00:00:12")
    left = fw.list()
    assert left["02:cc:00:00:00:11"] in (599, 600)
    assert left == {"02:cc:00:00:00:11": left["02:cc:00:00:00:11"], "02:cc:00:00:00:12": None}

    fw.revoke(MAC)
    fw.revoke(MAC)
    assert fw.list() == {"02:cc:00:00:00:12": None}

    fw.garden("add", "192.0.2.0/24")
    fw.garden("add", "2001:db8::/32")
    fw.garden("del", "192.0.2.0/24")
    fw.garden("del", "192.0.2.0/24")

    fw.up("br-lan", 2051, portal_ip="10.77.0.1")
    assert fw.list() == {"02:cc:00:00:00:12": None}
    fw.down()
    fw.down()
    assert not fw.is_healthy()


@pytest.mark.netns
def test_apply_drives_the_real_script(fw):
    fw.up("br-lan", 2050)
    fw.allow("02:cc:00:00:00:13")
    fw.apply([("allow", "02-CC-00-00-00-11", 600), ("allow", "02:cc:00:00:00:12", None),
              ("revoke", "02:cc:00:00:00:13"), ("revoke", "02:cc:00:00:00:14")])
    left = fw.list()
    assert set(left) == {MAC, "02:cc:00:00:00:12"}
    assert left[MAC] in (599, 600) and left["02:cc:00:00:00:12"] is None

    fw.apply([("allow", MAC, 60), ("revoke", "02:cc:00:00:00:12"), ("allow", MAC, None)])
    assert fw.list() == {MAC: None}
    fw.apply([])
    assert fw.list() == {MAC: None}


@pytest.mark.netns
def test_verbs_before_up_raise_with_the_scripts_message(fw):
    with pytest.raises(FirewallError, match="run callpass-fw up first"):
        fw.allow(MAC, 60)
    with pytest.raises(FirewallError, match="run callpass-fw up first"):
        fw.apply([("revoke", MAC)])


@pytest.mark.parametrize("given, expected", [
    ("02:cc:00:00:00:11", "02:cc:00:00:00:11"),
    ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
    ("aa-bb-cc-dd-ee-ff", "aa:bb:cc:dd:ee:ff"),
    ("Aa-0b-Cc-1d-Ee-2F", "aa:0b:cc:1d:ee:2f"),
])
def test_normalise_mac(given, expected):
    assert normalise_mac(given) == expected


BAD_MACS = ["", "zz:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb-cc:dd:ee:ff",
            "aabb.ccdd.eeff", "aabbccddeeff", "a:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff\n",
            " aa:bb:cc:dd:ee:ff", "; rm -rf /", "$(id)", "ａａ:bb:cc:dd:ee:ff", None, 42]


@pytest.mark.parametrize("mac", BAD_MACS)
def test_normalise_mac_rejects(mac):
    with pytest.raises(ValueError):
        normalise_mac(mac)


@pytest.mark.parametrize("call", [
    lambda fw: fw.allow("zz:bb:cc:dd:ee:ff"),
    lambda fw: fw.allow("; rm -rf /", 60),
    lambda fw: fw.revoke("$(id)"),
    lambda fw: fw.allow(MAC, 0),
    lambda fw: fw.allow(MAC, -1),
    lambda fw: fw.allow(MAC, 2.5),
    lambda fw: fw.allow(MAC, "60"),
    lambda fw: fw.allow(MAC, True),
    lambda fw: fw.allow(MAC, 31 * 24 * 3600 + 1),
    lambda fw: fw.up("br lan", 2050),
    lambda fw: fw.up("a-very-long-name", 2050),
    lambda fw: fw.up("br-lan", 0),
    lambda fw: fw.up("br-lan", 65536),
    lambda fw: fw.up("br-lan", "2050"),
    lambda fw: fw.up("br-lan", 2050, portal_ip="10.0.0.256"),
    lambda fw: fw.up("br-lan", 2050, portal_ip="fe80::1%eth0"),
    lambda fw: fw.garden("add", "10.0.0.1/24"),
    lambda fw: fw.garden("add", "0.0.0.0/0"),
    lambda fw: fw.garden("add", "example.com"),
    lambda fw: fw.garden("flip", "10.0.0.0/8"),
    lambda fw: fw.apply([("allow", "zz:bb:cc:dd:ee:ff", 60)]),
    lambda fw: fw.apply([("allow", MAC, 60), ("allow", MAC, 0)]),
    lambda fw: fw.apply([("revoke", MAC), ("allow", MAC, "60")]),
    lambda fw: fw.apply([("allow", MAC)]),
    lambda fw: fw.apply([("revoke", MAC, 60)]),
    lambda fw: fw.apply([("drop", MAC)]),
    lambda fw: fw.apply([["revoke", MAC]]),
    lambda fw: fw.apply(["revoke " + MAC]),
    lambda fw: fw.apply([("revoke", MAC + "\nallow 02:cc:00:00:00:12")]),
    lambda fw: fw.provider_set("192.0.2.1"),
    lambda fw: fw.provider_set(["192.0.2.1", "smsc.ru"]),
    lambda fw: fw.provider_set(["192.0.2.0/24"]),
    lambda fw: fw.provider_set(["fe80::1%eth0"]),
    lambda fw: fw.provider_set(["192.0.2.1 }"]),
    lambda fw: fw.provider_set([None]),
    lambda fw: fw.provider_set([f"10.0.{i // 250}.{i % 250 + 1}" for i in range(257)]),
])
def test_bad_input_raises_value_error_and_runs_nothing(recorder, call):
    fw, log = recorder
    with pytest.raises(ValueError):
        call(fw)
    assert not log.exists()


def test_arguments_reach_the_script_as_a_list(recorder):
    fw, log = recorder
    fw.up("br-lan", 2050, "10.77.0.1")
    fw.allow("AA-BB-CC-DD-EE-FF", 60)
    fw.allow("aa:bb:cc:dd:ee:ff")
    fw.revoke("aa:bb:cc:dd:ee:ff")
    fw.garden("add", "10.0.0.0/8")
    fw.garden("del", "2001:DB8::/32")
    assert fw.list() == {}
    fw.provider_set(["2001:DB8::0:1", "192.0.2.9", "192.0.2.10", "192.0.2.9"])
    fw.provider_set([])
    assert fw.is_complete()
    fw.down()
    assert log.read_text().splitlines() == [
        "up --lan br-lan --portal-port 2050 --portal-ip 10.77.0.1",
        "allow aa:bb:cc:dd:ee:ff 60",
        "allow aa:bb:cc:dd:ee:ff",
        "revoke aa:bb:cc:dd:ee:ff",
        "garden add 10.0.0.0/8",
        "garden del 2001:db8::/32",
        "list",
        "provider set 192.0.2.9 192.0.2.10 2001:db8::1",  # canonical, once each
        "provider set",
        "check",
        "down",
    ]


def test_is_complete_tells_a_missing_table_from_a_failing_script(tmp_path):
    missing = ScriptFirewall(write_script(tmp_path / "missing",
                                          "echo 'table is missing' >&2\nexit 3\n"))
    assert missing.is_complete() is False
    broken = ScriptFirewall(write_script(tmp_path / "broken", "echo 'nft failed' >&2\nexit 1\n"))
    with pytest.raises(FirewallError, match="nft failed"):
        broken.is_complete()
    # Exit 3 means "missing" for check only.
    with pytest.raises(FirewallError):
        missing.list()


@pytest.mark.netns
def test_is_complete_and_provider_set_on_the_real_script(fw, gateway_ns):
    assert fw.is_complete() is False  # no table yet
    with pytest.raises(FirewallError, match="run callpass-fw up first"):
        fw.provider_set(["192.0.2.1"])
    fw.up("br-lan", 2050)
    assert fw.is_complete() is True
    fw.provider_set(["192.0.2.1", "2001:db8::1"])
    listed = gateway_ns.run("nft", "list", "table", "inet", "callpass", check=True).stdout
    assert "192.0.2.1" in listed and "2001:db8::1" in listed
    gateway_ns.run("nft", "flush", "ruleset", check=True)
    assert fw.is_complete() is False


def test_apply_sends_the_changes_as_lines_on_stdin(tmp_path):
    log = tmp_path / "runs.log"
    fw = ScriptFirewall(write_script(tmp_path / "record", f'printf "%s\\n" "$*" >> {log}\n'
                                                          f'cat >> {log}\n'))
    fw.apply([("allow", "AA-BB-CC-DD-EE-FF", 60), ("allow", MAC, None), ("revoke", MAC)])
    fw.apply([])
    fw.revoke(MAC)
    assert log.read_text().splitlines() == [
        "apply",
        "allow aa:bb:cc:dd:ee:ff 60",
        "allow 02:cc:00:00:00:11",
        "revoke 02:cc:00:00:00:11",
        "revoke 02:cc:00:00:00:11",  # a single verb: nothing on its stdin
    ]


def test_failing_script_raises_firewall_error_with_its_message(tmp_path):
    fw = ScriptFirewall(write_script(tmp_path / "fails", 'echo "nft: boom" >&2\nexit 1\n'))
    with pytest.raises(FirewallError, match="nft: boom"):
        fw.allow(MAC)
    assert not fw.is_healthy()


def test_hanging_script_times_out(tmp_path):
    fw = ScriptFirewall(write_script(tmp_path / "hangs", "exec sleep 10\n"), timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(FirewallError, match="no answer"):
        fw.revoke(MAC)
    assert time.monotonic() - started < 3


def process_state(pid):
    """(state letter, process group) of pid from /proc, or None when it is gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (command) state ppid pgrp ...": the command may hold spaces and parentheses.
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return fields[0], int(fields[2])


def live_processes_in_group(group):
    """Pids of the processes of process group `group` that are not zombies."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = process_state(entry.name)
            if state is not None and state[1] == group and state[0] != "Z":
                found.append(int(entry.name))
    return found


def test_timeout_kills_everything_the_script_started(tmp_path):
    pids = tmp_path / "pids"
    # The shell waits on a child, as it waits on nft or awk: killing the shell alone leaves it.
    script = write_script(tmp_path / "spawns", f'sleep 300 &\necho "$$ $!" > {pids}\nwait\n')
    fw = ScriptFirewall(script, timeout_seconds=0.5)
    with pytest.raises(FirewallError, match="no answer"):
        fw.apply([("revoke", MAC)])
    shell, child = map(int, pids.read_text().split())

    def child_is_alive():
        state = process_state(child)
        return state is not None and state[0] != "Z"

    deadline = time.monotonic() + 3
    while child_is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child_is_alive()
    assert live_processes_in_group(shell) == []  # nor anything else of the script's group


def test_missing_script_raises_firewall_error(tmp_path):
    fw = ScriptFirewall(str(tmp_path / "nowhere"))
    with pytest.raises(FirewallError, match="cannot run"):
        fw.down()
    assert not fw.is_healthy()


@pytest.mark.parametrize("answer", ["not json", '{"mac": 1}', '[{"mac": "x", "seconds_left": 1}]',
                                    '[{"mac": "02:cc:00:00:00:11", "seconds_left": "soon"}]'])
def test_unreadable_list_raises_firewall_error(tmp_path, answer):
    fw = ScriptFirewall(write_script(tmp_path / "odd", f"echo '{answer}'\n"))
    with pytest.raises(FirewallError, match="unreadable"):
        fw.list()


def test_noop_firewall_remembers_and_records(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(firewall_module.time, "monotonic", lambda: now[0])
    fw = NoopFirewall()
    assert fw.name == "noop" and fw.is_healthy()

    fw.up("br-lan", 2050)
    fw.allow("AA-BB-CC-DD-EE-FF", 60)
    fw.allow(MAC)
    now[0] += 0.5
    assert fw.list() == {"aa:bb:cc:dd:ee:ff": 60, MAC: None}
    now[0] += 60
    assert fw.list() == {MAC: None}
    fw.revoke(MAC)
    fw.revoke(MAC)
    fw.garden("add", "10.0.0.0/8")
    fw.provider_set(["192.0.2.1"])
    assert fw.provider_addresses == ["192.0.2.1"] and fw.is_complete()
    fw.down()
    assert fw.list() == {} and fw.provider_addresses == [] and not fw.is_complete()
    fw.up("br-lan", 2050)
    assert fw.is_complete()
    assert fw.calls == [
        ("up", "br-lan", 2050, None),
        ("allow", "aa:bb:cc:dd:ee:ff", 60),
        ("allow", MAC, None),
        ("list",),
        ("list",),
        ("revoke", MAC),
        ("revoke", MAC),
        ("garden", "add", "10.0.0.0/8"),
        ("provider", ("192.0.2.1",)),
        ("down",),
        ("list",),
        ("up", "br-lan", 2050, None),
    ]


def test_noop_firewall_apply_records_each_change_like_the_single_verbs(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(firewall_module.time, "monotonic", lambda: now[0])
    fw = NoopFirewall()
    fw.allow("02:cc:00:00:00:12")
    fw.apply([("allow", "AA-BB-CC-DD-EE-FF", 60), ("allow", MAC, None),
              ("revoke", "02:cc:00:00:00:12"), ("revoke", "02:cc:00:00:00:13"),
              ("allow", MAC, 30)])
    fw.apply([])
    assert fw.calls == [
        ("allow", "02:cc:00:00:00:12", None),
        ("allow", "aa:bb:cc:dd:ee:ff", 60),
        ("allow", MAC, None),
        ("revoke", "02:cc:00:00:00:12"),
        ("revoke", "02:cc:00:00:00:13"),
        ("allow", MAC, 30),
    ]
    assert fw.list() == {"aa:bb:cc:dd:ee:ff": 60, MAC: 30}
    now[0] += 45
    assert fw.list() == {"aa:bb:cc:dd:ee:ff": 15}

    with pytest.raises(ValueError):
        fw.apply([("revoke", MAC), ("allow", MAC, 0)])
    assert fw.calls[-1] == ("list",)  # nothing of the refused batch was recorded
    assert fw.list() == {"aa:bb:cc:dd:ee:ff": 15}


def test_noop_firewall_rejects_what_the_script_would():
    fw = NoopFirewall()
    with pytest.raises(ValueError):
        fw.allow("zz:bb:cc:dd:ee:ff", 60)
    with pytest.raises(ValueError):
        fw.allow(MAC, 0)
    assert fw.calls == []


def test_from_config():
    script = from_config({"gateway": {"firewall": "script", "script": "/usr/local/sbin/callpass-fw",
                                      "script_timeout_seconds": 3}})
    assert isinstance(script, ScriptFirewall) and script.name == "script"
    assert script.script == "/usr/local/sbin/callpass-fw" and script.timeout_seconds == 3
    assert isinstance(from_config({"gateway": {"firewall": "noop"}}), NoopFirewall)
    with pytest.raises(ValueError):
        from_config({"gateway": {"firewall": "iptables", "script": "x"}})


def test_every_backend_the_config_accepts_exists():
    from portal.config import FIREWALLS
    from portal.firewall import BACKENDS

    assert set(FIREWALLS) == set(BACKENDS)


@pytest.mark.netns
def test_the_firewall_garden_follows_the_configured_one(fw, gateway_ns, cfg):
    """An entry taken out of gateway.garden leaves the real nft sets at the next sync (start,
    fw-sync, a remade table), also when its replacement covers it (nft refuses overlaps)."""
    app = create_app(cfg, firewall=fw)
    storage.upgrade(app.extensions["callpass"].engine)
    svc = app.extensions["callpass"]
    fw.up("br-lan", 2050)
    svc.config["gateway"]["garden"] = ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]
    assert settings.sync_garden(svc) == []
    assert netns.nft_garden(gateway_ns.run) == ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]

    svc.config["gateway"]["garden"] = ["192.0.0.0/16"]
    assert settings.sync_garden(svc) == []
    assert netns.nft_garden(gateway_ns.run) == ["192.0.0.0/16"]
    assert settings.sync_garden(svc) == []  # again: nothing left to take out, nothing fails
    assert netns.nft_garden(gateway_ns.run) == ["192.0.0.0/16"]

    fw.down()  # `nft flush ruleset`: the worker makes the table again and syncs the garden
    fw.up("br-lan", 2050)
    assert settings.sync_garden(svc) == []
    assert netns.nft_garden(gateway_ns.run) == ["192.0.0.0/16"]
    svc.config["gateway"]["garden"] = []
    assert settings.sync_garden(svc) == []
    assert netns.nft_garden(gateway_ns.run) == []
    app.extensions["callpass"].engine.dispose()
