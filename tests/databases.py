"""The database servers the tests start themselves: PostgreSQL and Redis from Debian's packages,
without systemd, on loopback ports of their own; torn down when the run ends.

Every test that keeps data asks the `database_url` fixture (or `servers.new_database`) for a
fresh database: a SQLite file, or with CALLPASS_TEST_DATABASE=postgresql a new database on the
PostgreSQL server. So one suite runs on both: `make test` runs it twice, the second time only the
tests that keep data.
"""

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
KIND = os.environ.get("CALLPASS_TEST_DATABASE", "sqlite")
if KIND not in ("sqlite", "postgresql"):
    raise SystemExit(f"CALLPASS_TEST_DATABASE must be sqlite or postgresql, not {KIND!r}")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth on loopback, fsync off) owned by `postgres`."""

    def __init__(self):
        if not (POSTGRES_BIN / "initdb").exists():
            pytest.skip("PostgreSQL is not installed (apt install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="callpass-pg-"))
        self.port = free_port()
        self.names = itertools.count(1)
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.owner:
            os.chown(self.folder, self.owner.pw_uid, self.owner.pw_gid)
        self.run("initdb", "-D", self.folder / "data", "-U", "postgres", "-A", "trust", "--no-sync",
                 "-E", "UTF8", "--locale=C.UTF-8")
        self.run("pg_ctl", "-D", self.folder / "data", "-l", self.folder / "log", "-w", "-o",
                 f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                 "start")

    def run(self, program, *args):
        command = [str(POSTGRES_BIN / program), *map(str, args)]
        user = {"user": self.owner.pw_uid, "group": self.owner.pw_gid} if self.owner else {}
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder, **user)

    def url(self, name="postgres"):
        """Through the server's Unix socket, which `serve` reaches from inside a test's network
        namespace too (its 127.0.0.1 is the namespace's own)."""
        return f"postgresql+psycopg://postgres@/{name}?host={self.folder}&port={self.port}"

    def new_database(self):
        """The URL of a new, empty database."""
        import psycopg

        name = f"test_{next(self.names)}"
        with psycopg.connect(f"host={self.folder} port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self):
        self.run("pg_ctl", "-D", self.folder / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisServer:
    """A throwaway Redis (no persistence) on a loopback port."""

    def __init__(self):
        if not shutil.which("redis-server"):
            pytest.skip("Redis is not installed (apt install redis-server)")
        self.folder = Path(tempfile.mkdtemp(prefix="callpass-redis-"))
        self.port = free_port()
        subprocess.run(["redis-server", "--daemonize", "yes", "--port", str(self.port),
                        "--bind", "127.0.0.1", "--dir", str(self.folder),
                        "--pidfile", str(self.folder / "pid"), "--logfile", str(self.folder / "log"),
                        "--save", "", "--appendonly", "no"], check=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)
        self.databases = itertools.count(0)

    def url(self):
        """A Redis URL on a logical database of its own (0–15), flushed first."""
        number = next(self.databases) % 16
        subprocess.run(["redis-cli", "-p", str(self.port), "-n", str(number), "flushdb"],
                       check=True, capture_output=True)
        return f"redis://127.0.0.1:{self.port}/{number}"

    def stop(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


class Servers:
    """The servers of this test run, each started the first time a test needs it."""

    def __init__(self):
        self.postgres = self.redis = None

    def postgresql(self):
        if self.postgres is None:
            self.postgres = PostgresServer()
        return self.postgres

    def redis_server(self):
        if self.redis is None:
            self.redis = RedisServer()
        return self.redis

    def new_database(self, folder, name="callpass"):
        """A fresh database for one test (or one module's shared peer): see the module doc."""
        if KIND == "postgresql":
            return self.postgresql().new_database()
        return f"sqlite:///{Path(folder) / f'{name}.sqlite3'}"

    def stop(self):
        for server in (self.postgres, self.redis):
            if server is not None:
                server.stop()


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, run the tests that keep data; the others ran on SQLite already."""
    if KIND != "postgresql":
        return
    keeps_data = [item for item in items
                  if {"database_url", "servers"} & set(getattr(item, "fixturenames", ()))]
    config.hook.pytest_deselected(items=[item for item in items if item not in keeps_data])
    items[:] = keeps_data


@pytest.fixture(scope="session")
def servers():
    started = Servers()
    yield started
    started.stop()


@pytest.fixture
def database_url(servers, tmp_path):
    """A fresh, empty database for this test: SQLite, or PostgreSQL (see the module doc)."""
    return servers.new_database(tmp_path)


@pytest.fixture(scope="session")
def postgresql(servers):
    """The run's PostgreSQL server, for the tests that need it whatever the suite runs on."""
    return servers.postgresql()


@pytest.fixture(scope="session")
def redis_server(servers):
    """The run's Redis server."""
    return servers.redis_server()
