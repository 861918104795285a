"""The service files agree on the firewall: stopping never deletes table inet callpass (with no
table forwarding is open, so that would fail open), and they create it with the interface and
port of the example config, which callpass uses when it recreates the table."""

import re
import tomllib
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def example_config():
    with open(DEPLOY / "callpass.toml", "rb") as fh:
        config = tomllib.load(fh)
    return config["gateway"]["lan"], config["portal"]["listen"].rpartition(":")[2]


def test_systemd_creates_the_table_and_never_deletes_it():
    unit = (DEPLOY / "callpass-firewall.service").read_text()
    lan, port = example_config()
    assert re.search(rf"^ExecStart=\S+callpass-fw up --lan {lan} --portal-port {port}$",
                     unit, re.M)
    assert not re.search(r"^Exec(Stop|StopPost|Reload)=", unit, re.M)


def test_openwrt_creates_the_table_and_never_deletes_it():
    init = (DEPLOY / "openwrt" / "callpass.init").read_text()
    lan, port = example_config()
    assert f"LAN={lan}\n" in init and f"PORT={port}\n" in init
    assert 'callpass-fw up --lan "$LAN" --portal-port "$PORT"' in init
    stop = init[init.index("stop_service()"):]
    stop = stop[:stop.index("\n}\n")]
    assert not re.search(r"^\s*[^#\s].*callpass-fw", stop, re.M)  # no command runs the script
