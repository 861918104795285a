"""What the tests and benchmarks of several nodes share: guests on loopback addresses of their own,
and HAProxy with the example config (deploy/central/haproxy.cfg) in front of the nodes."""

import re
import subprocess
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

HAPROXY_EXAMPLE = Path(__file__).resolve().parent.parent / "deploy/central/haproxy.cfg"


class SourceAdapter(HTTPAdapter):
    """Connections from one loopback address: a device of its own to the portal."""

    def __init__(self, source):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def device(ip):
    """An HTTP session whose connections come from ip."""
    session = requests.Session()
    session.mount("http://", SourceAdapter(ip))
    return session


def start_haproxy(folder, port, node_ports):
    """HAProxy with the example config, listening on loopback port, in front of node_ports."""
    config = HAPROXY_EXAMPLE.read_text().replace("bind :80", f"bind 127.0.0.1:{port}")
    servers = "".join(f"    server node{n} 127.0.0.1:{node_port} check\n"
                      for n, node_port in enumerate(node_ports, 1))
    config = re.sub(r"(    server node\d .*\n)+", servers, config)
    (folder / "haproxy.cfg").write_text(config)
    with (folder / "haproxy.log").open("w") as log:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(folder / "haproxy.cfg")],
                                   stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, (folder / "haproxy.log").read_text()
        time.sleep(0.1)
