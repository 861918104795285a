"""openNDS 9.10 (Debian `opennds`) on the gateway of a `netns.Topology`, contained.

What runs, all inside the gateway's network namespace (see ../shared/reference/routers.md):

- dnsmasq, DHCP only (`--port=0`), on br-lan: it hands each guest its fixed topology address
  (static leases, so the guests keep the addresses netns.PLAN gives them) and writes the lease
  file openNDS reads — openNDS refuses a client without a lease ("Access Denied").
- openNDS under `unshare -m` with a private directory bind-mounted over `/tmp` (its socket, state
  and lease file live there) and private copies over the `/etc` files it would otherwise write
  (`/etc/hosts`, `/etc/dnsmasq.conf`); PATH starts with a directory where `iptables` and
  `ip6tables` are the legacy tools (9.10 cannot drive iptables-nft) and `systemctl` does nothing.
  The legacy rules and the mounts go away with the namespaces: the host's firewall and /etc are
  never touched.
- `ndsctl` is reached with `nsenter -t <opennds pid> -m -n ndsctl` (it finds its socket through
  /etc/opennds/opennds.conf and /tmp, i.e. only inside openNDS's mount namespace).

Guests get their lease with `busybox udhcpc` (a no-op script: the address is already set).

A gateway whose FAS is elsewhere (level 3, tests/test_opennds_gateway_venue.py) also gets names
in its private /etc/hosts and a private /etc/ssl/certs whose CA bundle is the test's own CA, so
its authmon (PHP) trusts the test's HTTPS FAS; the host's files stay as they are.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

GATEWAY_PORT = 2050
SHIPPED_CONF = Path(__file__).resolve().parent.parent / "deploy" / "opennds" / "opennds.conf"

NEEDED = ("opennds", "ndsctl", "iptables-legacy", "ip6tables-legacy", "dnsmasq", "busybox",
          "unshare", "nsenter", "curl")


def opennds_missing():
    """Why openNDS cannot run here (a missing tool), or None."""
    for tool in NEEDED:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"needs {tool} (deploy/install-system-packages --tests installs it)"
    return None


def opennds_conf(topo, *, fasport, faskey):
    """deploy/opennds/opennds.conf, the shipped legacy config, with the test's addresses."""
    return shipped_conf(SHIPPED_CONF, {
        "GatewayInterface": topo.lan_iface, "fasremoteip": topo.gateway.ip,
        "fasport": str(fasport), "faskey": faskey, "gatewayport": str(GATEWAY_PORT)})


def shipped_conf(path, values):
    """The shipped legacy config file at path with the options in values set to the test's."""
    values = dict(values)
    lines = []
    for line in Path(path).read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in values:
            line = f"{key} {values.pop(key)}"
        lines.append(line)
    assert not values, f"{Path(path).name} lacks {', '.join(values)}"
    return "\n".join(lines) + "\n"


class OpenNDSGateway:
    """dnsmasq (DHCP) and openNDS on topo's gateway, with their files in folder; close() stops
    them (the namespaces take the rules and mounts with them)."""

    def __init__(self, topo, folder, *, fasport, faskey, conf_text=None, hosts=(), ca_file=None):
        self.topo = topo
        self.folder = Path(folder)
        # openNDS's /tmp. folder itself may be under the host's /tmp, hidden once the private
        # one is mounted: what openNDS reads (config, PATH) lives in here.
        self.tmp = self.folder / "tmp"
        self.etc = self.folder / "etc"          # private copies of the /etc files it writes
        self.bin = self.tmp / "bin"             # legacy iptables, a do-nothing systemctl
        for path in (self.tmp, self.etc, self.bin):
            path.mkdir(parents=True, exist_ok=True)
        self.tmp.chmod(0o1777)
        self.conf = self.tmp / "opennds.conf"
        self.conf.write_text(conf_text or opennds_conf(topo, fasport=fasport, faskey=faskey))
        self.hosts = list(hosts)          # extra /etc/hosts lines
        self.ca_file = ca_file            # the only CA its PHP trusts, when given
        self.log_path = self.folder / "opennds.log"
        self.dnsmasq_log_path = self.folder / "dnsmasq.log"
        self._logs = []
        self.pid = None

    def start(self, timeout=20):
        """Start dnsmasq and openNDS; returns once openNDS answers ndsctl and its redirect rule
        is in place."""
        for name, target in (("iptables", "iptables-legacy"), ("ip6tables", "ip6tables-legacy"),
                             ("systemctl", "true")):
            link = self.bin / name
            if not link.exists():
                link.symlink_to(shutil.which(target) or f"/usr/sbin/{target}")
        mounts = []
        for name in ("hosts", "dnsmasq.conf"):
            copy = self.etc / name
            original = Path("/etc", name)
            copy.write_bytes(original.read_bytes() if original.exists() else b"")
            if name == "hosts" and self.hosts:
                with copy.open("a") as fh:
                    fh.write("".join(f"{line}\n" for line in self.hosts))
            if original.exists():
                mounts.append(f"mount --bind {copy} {original}")
        if self.ca_file:
            certs = self.etc / "certs"
            certs.mkdir(exist_ok=True)
            (certs / "ca-certificates.crt").write_bytes(Path(self.ca_file).read_bytes())
            mounts.append(f"mount --bind {certs} /etc/ssl/certs")
        mounts.append(f"mount --bind {self.tmp} /tmp")
        hosts = [self.topo.guest1, self.topo.guest2]
        dnsmasq_log = self.dnsmasq_log_path.open("w")
        self._logs.append(dnsmasq_log)
        self.topo.popen(
            "gateway", "dnsmasq", "--keep-in-foreground", "--port=0", "--conf-file=/dev/null",
            "--no-hosts", "--no-resolv", "--no-ping", "--user=root", "--group=root",
            f"--interface={self.topo.lan_iface}", "--bind-interfaces", "--pid-file=",
            f"--dhcp-range={self.topo.gateway.ip},static,255.255.255.0,1h",
            *[f"--dhcp-host={host.mac},{host.ip}" for host in hosts],
            f"--dhcp-leasefile={self.tmp / 'dhcp.leases'}", "--log-dhcp",
            "--log-facility=-", stdout=dnsmasq_log, stderr=subprocess.STDOUT)
        log = self.log_path.open("w")
        self._logs.append(log)
        env = dict(os.environ, PATH="/tmp/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        script = " && ".join(mounts) + " && exec opennds -f -d 2 -c /tmp/opennds.conf"
        # `ip netns exec` and `unshare` both exec: the Popen's pid is openNDS's.
        process = self.topo.popen("gateway", "unshare", "-m", "--propagation", "private",
                                  "sh", "-c", script, stdout=log, stderr=subprocess.STDOUT,
                                  env=env)
        self.process = process
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("opennds exited:\n" + self.log_path.read_text())
            if self.ndsctl("status").returncode == 0 and self.is_redirecting():
                return self
            time.sleep(0.2)
        raise RuntimeError("opennds did not answer ndsctl:\n" + self.log_path.read_text())

    def is_redirecting(self):
        """Whether openNDS's rule sending guests' web to its port is in place."""
        done = self.topo.run("gateway", "iptables-legacy", "-t", "nat", "-S", "ndsOUT")
        return f"--to-destination {self.topo.gateway.ip}:{GATEWAY_PORT}" in done.stdout

    def ndsctl_prefix(self):
        """The command that runs ndsctl against this openNDS, from the host's namespaces."""
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "ndsctl"]

    def ndsctl(self, *argv, timeout=10):
        """Run ndsctl argv against this openNDS (subprocess.run, output captured)."""
        return subprocess.run([*self.ndsctl_prefix(), *argv], capture_output=True, text=True,
                              timeout=timeout)

    def lease(self, guest, timeout=15):
        """Have guest ask for its DHCP lease (busybox udhcpc); True once it has one."""
        done = self.topo.run(guest, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
                             "-s", "/bin/true", "-t", "5", "-T", "1", timeout=timeout)
        return done.returncode == 0

    def close(self):
        """Close the logs (the topology stops the processes and takes the rules and mounts)."""
        for log in self._logs:
            log.close()
