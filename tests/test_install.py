"""deploy/install against a temporary root (--root): the files, their modes and owner, the units
enabled, a config with generated secrets, the first admin; a second run upgrades in place and
keeps the config and the database; --uninstall removes what it added except the config and data.

The root is a world-readable folder under /tmp and the service user is `nobody` (the installer
creates no user under --root), so the steps it runs as that user can reach their files."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install"


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root (files owned by the service user)")
    folder = Path(tempfile.mkdtemp(prefix="callpass-root-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def install(root, *args, stdin=""):
    done = subprocess.run(["sh", str(INSTALL), "--root", str(root), "--user", "nobody", *args],
                          input=stdin, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def mode_owner(path):
    info = path.stat()
    return stat.S_IMODE(info.st_mode), info.st_uid


def callpass(root, *args):
    """A callpass command of the installed venv, on the installed config and database."""
    env = dict(os.environ, CALLPASS_PORTAL_DATABASE=f"sqlite:///{root}/var/lib/callpass/callpass.sqlite3",
               CALLPASS_PROVIDER_APIKEY="set-later-by-the-operator")
    return subprocess.run([str(root / "opt/callpass/bin/callpass"), *args,
                           "--config", str(root / "etc/callpass/callpass.toml")],
                          capture_output=True, text=True, env=env)


def test_install_upgrade_and_uninstall(root):
    nobody = 65534
    out = install(root, "--admin", "venue", "--lan", "guests0",
                  "--public-url", "https://portal.example.net/", stdin="a long enough password\n")

    config = root / "etc/callpass/callpass.toml"
    database = root / "var/lib/callpass/callpass.sqlite3"
    assert mode_owner(config) == (0o600, nobody)
    assert mode_owner(root / "etc/callpass")[0] == 0o750
    assert mode_owner(root / "var/lib/callpass") == (0o700, nobody)
    assert mode_owner(database) == (0o600, nobody)
    assert mode_owner(root / "usr/local/sbin/callpass-fw")[0] == 0o755
    for unit in ("callpass.service", "callpass-firewall.service"):
        shipped = (REPO / "deploy" / unit).read_text()
        assert (root / "etc/systemd/system" / unit).read_text() == shipped.replace(
            "User=callpass\n", "User=nobody\n").replace("Group=callpass\n", "Group=nogroup\n")
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    text = config.read_text()
    assert 'lan = "guests0"' in text and 'public_url = "https://portal.example.net/"' in text
    assert 'signature = "md5"' in text and 'secret_key = ""' not in text
    # Only the provider account is left to the operator.
    assert callpass(root, "check-config").returncode == 0
    token = next(line.split('"')[1] for line in text.splitlines()
                 if line.startswith('token = "') and line != 'token = ""')
    assert f"https://portal.example.net/callback/smsc/{token}" in out
    assert callpass(root, "admin", "list").stdout.startswith("venue\t")
    # The gateway gets callpass and its dependencies, not the test extras.
    site = next((root / "opt/callpass/lib").glob("python3*/site-packages"))
    assert (site / "portal").is_dir() and not (site / "pytest").exists()
    assert not (site / "playwright").exists()

    out = install(root)  # an upgrade: same config, same data
    assert "upgrading callpass" in out and "admins: kept" in out
    assert config.read_text() == text
    assert mode_owner(root / "var/lib/callpass/before-upgrade.sqlite3") == (0o600, nobody)
    assert callpass(root, "admin", "list").stdout.startswith("venue\t")

    out = install(root, "--uninstall")
    assert not (root / "opt/callpass").exists()
    assert not (root / "usr/local/sbin/callpass-fw").exists()
    assert not list((root / "etc/systemd/system").rglob("callpass*"))
    assert config.read_text() == text and database.exists()


def test_bad_arguments_change_nothing(root):
    for args in (["--lan", "eth0;reboot"], ["--public-url", "portal.example.net"], ["--bogus"]):
        done = subprocess.run(["sh", str(INSTALL), "--root", str(root), *args],
                              capture_output=True, text=True)
        assert done.returncode == 2, args
    assert list(root.iterdir()) == []
