"""The quick first run: `make demo` installs callpass without the test extras and passes PORT,
HOST and CONFIG on; `callpass demo --config` keeps settings and admins, CALLPASS_* apply."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def make_dry_run(*args):
    """The commands `make -n …` would run, with a venv that does not exist."""
    return subprocess.run(["make", "-n", *args, "VENV=/nonexistent/venv"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def test_make_demo_installs_callpass_without_the_test_extras():
    commands = make_dry_run("demo", "PORT=9000")
    installs = [line for line in commands.splitlines() if line.startswith("/nonexistent/venv/bin/pip")]
    assert installs and all(line.rstrip().endswith(" -e .") for line in installs), installs
    assert "[test]" not in commands and "pytest" not in commands and "playwright" not in commands
    assert "callpass demo --host 127.0.0.1 --port 9000" in commands


def test_make_test_installs_the_test_extras():
    commands = make_dry_run("test")
    assert "pip install" in commands and "-e '.[test]'" in commands
    assert "install-system-packages --tests" in commands


def two_free_ports():
    """A port P with P+1 also free (the demo's simulator)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def run_demo(config, port, env):
    """Start `callpass demo`, wait for its page, return (process, the page)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "portal", "demo", "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            return process, requests.get(f"http://127.0.0.1:{port}/", timeout=2).text
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(process.communicate()[0])


def stop(process):
    process.terminate()
    return process.communicate(timeout=10)[0]


def test_demo_with_a_config_keeps_settings_and_admins_and_takes_environment(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text(f'[portal]\ndatabase = "sqlite:///{tmp_path / "demo.sqlite3"}"\n'
                      'listen = "0.0.0.0:1"\n[venue]\nname = "Cafe From The File"\n')
    env = dict(os.environ, CALLPASS_VENUE_WELCOME="Welcome from the environment")
    port = two_free_ports()

    process, page = run_demo(config, port, env)
    output = stop(process)
    assert "Cafe From The File" in page and "Welcome from the environment" in page
    assert "ignoring portal.listen" in output  # the demo listens where --port says
    assert "user demo, password" in output
    assert (tmp_path / "demo.sqlite3").exists()

    process, page = run_demo(config, port, dict(os.environ))
    output = stop(process)
    assert "Welcome from the environment" not in page
    assert "the admins already in the database" in output and "password" not in output
