"""One guest cannot take the portal down with slow or oversized requests (real `serve`, waitress).

The firewall caps each guest's connections to the portal (tests/test_gateway_hostile.py); these
tests show what waitress itself holds: slow connections hold no thread, and an oversized body is
refused from its headers, before anything is read or spooled.
"""

import socket
import time

import pytest
import requests
from serve_support import TOKEN, ServeProcess, free_port, provider_for, write_arp, write_config



@pytest.fixture
def portal(tmp_path, database_url):
    port = free_port()
    simulator = provider_for(port)
    config = write_config(tmp_path / "callpass.toml", port=port, database=database_url,
                          provider_url=simulator.url, firewall="noop",
                          arp=write_arp(tmp_path / "arp", {"127.0.0.1": "02:cc:00:00:00:01"}))
    serve = ServeProcess(config, tmp_path / "serve.log").start(port)
    yield port, simulator
    serve.stop()
    simulator.stop()


def test_a_huge_body_is_refused_from_its_headers(portal):
    port, _ = portal
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        started = time.monotonic()
        conn.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 400000000\r\n\r\n" + b"phone=" + b"1" * 65536)
        answer = conn.recv(200)
    assert answer.startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2


def test_slow_connections_hold_no_thread(portal):
    """300 connections drip their headers; pages, probes and the provider's notification are
    answered at once meanwhile."""
    port, simulator = portal
    slow = []
    try:
        for _ in range(300):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(conn)
        for conn in slow:
            conn.sendall(b"X-Drip: 1\r\n")
        for path in ("/", "/generate_204", "/healthz"):
            started = time.monotonic()
            assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=5,
                                allow_redirects=False).status_code in (200, 302)
            assert time.monotonic() - started < 1
        started = time.monotonic()
        answer = requests.post(f"http://127.0.0.1:{port}/callback/smsc/{TOKEN}",
                               data={"waitcall": "1", "phone": "79161234567", "ts": "1"},
                               timeout=5)
        assert answer.status_code in (200, 400, 403) and time.monotonic() - started < 1
    finally:
        for conn in slow:
            conn.close()
