"""Several `callpass serve` nodes on one PostgreSQL and one Redis: any node serves any request (a
guest starts on one, the provider's notification lands on the other), rate limits count across
nodes, background jobs run on one node at a time, and a node goes on serving when Redis stops.
Behind the example HAProxy (deploy/central/haproxy.cfg), killing a node loses nothing."""

import shutil
import time

import pytest
import requests
from chain_support import device, start_haproxy
from serve_support import (ServeProcess, free_port, provider_for, stop_process, write_arp,
                           write_config)
from sqlalchemy import func, select

from databases import RedisServer
from portal import storage
from portal.storage import access_session, notification, verification


GUESTS = {f"127.0.0.{20 + n}": f"02:cd:00:00:00:{20 + n:02x}" for n in range(8)}


class Chain:
    """Two nodes sharing a database and a Redis; the simulator notifies node B, or the port
    notify_port (a load balancer's)."""

    def __init__(self, folder, database, redis_url, sections=None, notify_port=None):
        self.ports = [free_port(), free_port()]
        self.simulator = provider_for(notify_port or self.ports[1])
        arp = write_arp(folder / "arp", GUESTS)
        portal = {"ratelimit_storage": redis_url, **(sections or {})}
        self.nodes = []
        for name, port in zip("ab", self.ports):
            config = write_config(folder / f"{name}.toml", port=port, database=database,
                                  provider_url=self.simulator.url, firewall="noop", arp=arp,
                                  sections={"portal": portal})
            self.nodes.append(ServeProcess(config, folder / f"{name}.log").start(port))
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]

    def stop(self):
        for node in self.nodes:
            node.stop()
        self.simulator.stop()


@pytest.fixture
def chain(tmp_path, postgresql, redis_server):
    chain = Chain(tmp_path, postgresql.new_database(), redis_server.url(),
                  {"limit_per_device": "3 per minute"})
    yield chain
    chain.stop()


def test_a_guest_started_on_node_a_gets_online_by_a_call_node_b_receives(chain):
    guest = device("127.0.0.20")
    form = guest.post(chain.urls[0] + "/", data={"phone": "+79161234567"}, allow_redirects=False,
                      timeout=30)
    assert form.status_code == 303, form.text
    token = form.headers["Location"].rsplit("/", 1)[-1]

    answer = requests.post(chain.simulator.url + "/sim/call", data={"phone": "79161234567"},
                           timeout=30).json()
    assert answer["status"] == 200  # node B's handler answered

    def access(url):
        return guest.get(f"{url}/api/verifications/{token}", timeout=10).json().get("access")

    deadline = time.monotonic() + 15
    while access(chain.urls[0]) != "online" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert access(chain.urls[0]) == access(chain.urls[1]) == "online"


def test_rate_limits_count_across_nodes(chain):
    guest = device("127.0.0.21")  # three numbers asked for allowed a minute, four typed
    statuses = [guest.post(chain.urls[n % 2] + "/", data={"phone": f"+7916123450{n}"},
                           allow_redirects=False, timeout=30).status_code for n in range(4)]
    assert statuses == [303, 303, 303, 429]
    # Another device is not held back by it, on either node.
    other = device("127.0.0.22")
    assert other.post(chain.urls[1] + "/", data={"phone": "+79161234569"}, allow_redirects=False,
                      timeout=30).status_code == 303


def test_a_background_job_runs_on_one_node_at_a_time(postgresql):
    url = postgresql.new_database()
    first, second = storage.connect(url), storage.connect(url)
    with storage.job_lock(first, "maintenance") as mine:
        assert mine
        with storage.job_lock(second, "maintenance") as theirs:
            assert not theirs
        with storage.job_lock(second, "firewall") as other_job:
            assert other_job  # each job has its own lock
    with storage.job_lock(second, "maintenance") as theirs:
        assert theirs  # let go when the first node's round ended
    first.dispose()
    second.dispose()


def test_the_nodes_go_on_when_redis_stops(tmp_path, postgresql):
    redis = RedisServer()
    chain = Chain(tmp_path, postgresql.new_database(), redis.url())
    try:
        guest = device("127.0.0.23")
        assert guest.post(chain.urls[0] + "/", data={"phone": "+79161234570"},
                          allow_redirects=False, timeout=30).status_code == 303
        redis.stop()
        for n, url in enumerate(chain.urls):
            started = time.monotonic()
            answer = device(f"127.0.0.{24 + n}").post(
                url + "/", data={"phone": f"+7916123457{1 + n}"}, allow_redirects=False, timeout=30)
            assert answer.status_code == 303, answer.text
            assert time.monotonic() - started < 5
    finally:
        chain.stop()
        redis.stop()


def test_behind_haproxy_killing_a_node_loses_nothing(tmp_path, postgresql, redis_server):
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy (apt install haproxy)")
    database = postgresql.new_database()
    balancer_port = free_port()
    chain = Chain(tmp_path, database, redis_server.url(), {"trusted_proxy": "127.0.0.1"},
                  notify_port=balancer_port)
    balancer = start_haproxy(tmp_path, balancer_port, chain.ports)
    url = f"http://127.0.0.1:{balancer_port}"
    try:
        tokens = {}
        for n, ip in enumerate(GUESTS):
            if n == len(GUESTS) // 2:
                chain.nodes[0].kill()  # kill -9 in the middle of the burst
            phone = f"+7916555000{n}"
            form = device(ip).post(url + "/", data={"phone": phone}, allow_redirects=False,
                                   timeout=30)
            assert form.status_code == 303, (ip, form.status_code, form.text)
            tokens[ip] = (phone, form.headers["Location"].rsplit("/", 1)[-1])
            answer = requests.post(chain.simulator.url + "/sim/call",
                                   data={"phone": phone.lstrip("+")}, timeout=30).json()
            assert answer["status"] == 200, answer

        def online(ip):
            token = tokens[ip][1]
            return device(ip).get(f"{url}/api/verifications/{token}", timeout=10).json().get(
                "access") == "online"

        deadline = time.monotonic() + 20
        while not all(map(online, GUESTS)) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert [ip for ip in GUESTS if not online(ip)] == []

        engine = storage.connect(database)
        with engine.connect() as conn:
            confirmed = conn.execute(select(verification.c.id).where(
                verification.c.state == "confirmed")).scalars().all()
            per_verification = conn.execute(select(access_session.c.verification_id, func.count())
                                            .group_by(access_session.c.verification_id)).all()
            accepted = conn.execute(select(func.count()).where(
                notification.c.verdict == "accepted")).scalar()
        engine.dispose()
        assert len(confirmed) == len(GUESTS) == accepted
        assert sorted(per_verification) == sorted((vid, 1) for vid in confirmed)
    finally:
        stop_process(balancer)
        chain.stop()
