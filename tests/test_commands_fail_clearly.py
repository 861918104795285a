"""Common operator mistakes end in one clear line naming the key, not a traceback."""

import socket
import subprocess
import sys

from serve_support import free_port, write_config


def callpass(*argv, timeout=30):
    return subprocess.run([sys.executable, "-m", "portal", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout)


def test_serve_on_a_port_in_use_says_so(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "callpass.toml", port=port, firewall="noop",
                          database=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = callpass("serve", "--config", config)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (portal.listen)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_database_in_a_missing_folder_is_named(tmp_path):
    database = f"sqlite:///{tmp_path / 'no such folder' / 'db.sqlite3'}"
    config = write_config(tmp_path / "callpass.toml", port=free_port(), firewall="noop",
                          database=database)
    for argv in (["serve"], ["fw-sync"], ["admin", "list"], ["purge"]):
        done = callpass(*argv, "--config", config)
        assert done.returncode == 2, (argv, done.stderr)
        assert "portal.database: cannot open" in done.stderr and "no such folder" in done.stderr
        assert "Traceback" not in done.stderr
