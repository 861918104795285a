"""The example HAProxy config (deploy/central/haproxy.cfg) keeps a node that is slow to answer its
/healthz check — a node busy with a rush, whose check waits behind the guests' requests — instead
of taking it out and answering every guest 503. A stand-in node (no callpass needed) plays the
busy one: its /healthz takes 3 s, longer than the check interval."""

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from chain_support import start_haproxy
from serve_support import free_port, stop_process

SLOW_CHECK_SECONDS = 3


class BusyNode(BaseHTTPRequestHandler):
    slow = False  # set once HAProxy is up: from then on every /healthz answers late

    def do_GET(self):
        if self.path == "/healthz" and BusyNode.slow:
            time.sleep(SLOW_CHECK_SECONDS)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_node_slow_to_answer_its_check_stays_in(tmp_path):
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (apt install haproxy)")
    node = ThreadingHTTPServer(("127.0.0.1", 0), BusyNode)
    threading.Thread(target=node.serve_forever, daemon=True).start()
    port = free_port()
    balancer = start_haproxy(tmp_path, port, [node.server_address[1]])
    try:
        BusyNode.slow = True
        # Three check intervals (2 s each) of 3 s checks: the 2 s default took the node out.
        time.sleep(3 * 2 + SLOW_CHECK_SECONDS)
        answer = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert answer.status_code == 200, (tmp_path / "haproxy.log").read_text()[-2000:]
    finally:
        BusyNode.slow = False
        stop_process(balancer)
        node.shutdown()
        node.server_close()
