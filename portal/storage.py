"""Storage: the tables callpass keeps, behind one SQLAlchemy engine addressed by a database URL.

SQLite is the default (WAL, foreign keys on), for one venue on one machine; PostgreSQL
(`postgresql+psycopg://…`) carries a chain of venues on several portal nodes. The schema is created
and upgraded by `upgrade()` through Alembic revisions (portal/migrations/versions), an explicit step
run by `serve`, `demo`, `fw-sync` and the tests — never at import or in the app factory. A schema
change is a new revision there; tests/test_storage.py checks the revisions make these tables.
"""

import functools
import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Table, Text, create_engine, event, inspect, text)
from sqlalchemy.types import TypeDecorator

from . import storage_legacy

# PostgreSQL advisory lock keys (64-bit numbers no other program on the server uses).
WRITE_LOCK = 0x63616C6C70617300   # one write transaction at a time (see begin)
JOB_LOCKS = {                     # one node at a time runs each background job (see job_lock)
    "maintenance": WRITE_LOCK + 1,
    "firewall": WRITE_LOCK + 2,
}

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger(__name__)
# Alembic says "Context impl …" at INFO on every command; upgrade() says what it changed instead.
logging.getLogger("alembic").setLevel(logging.WARNING)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData()

MAIN_VENUE = 1  # the venue of a single-venue install, and of guests no known router names

# The venues of a chain: what a guest arrives through (see venues.py). Records carry venue_id as a
# plain number; venues are never deleted.
venue = Table(
    "venue", metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(40), nullable=False, unique=True),    # "cafe-arbat", in addresses
    Column("name", String(100), nullable=False),                # for admins ("" = main)
    Column("nas_identifier", String(64), unique=True),  # RADIUS NAS-Identifier = MikroTik identity
    Column("nas_ip", String(45), unique=True),          # RADIUS NAS-IP-Address or source address
    Column("unifi_site", String(64), unique=True),       # UniFi controller site ("default")
    Column("created_at", UTCDateTime, nullable=False),
    # An openNDS gateway whose remote FAS this is (opennds_remote.py): its gatewayname and faskey.
    Column("opennds_gateway", String(64)),
    Column("opennds_faskey", String(128)),
    Index("ix_venue_opennds_gateway", "opennds_gateway", unique=True),
    # RADIUS Called-Station-Id ("AA-BB-CC-DD-EE-FF:<SSID>"): its network name, or all of it
    Column("called_station", String(64)),
    Index("ix_venue_called_station", "called_station", unique=True),
)

# The devices of venues' openNDS gateways callpass has heard from: openNDS adds " Node:<MAC> " to
# the gatewayname, and a node's polls carry the sha256 of that name (opennds_remote.py).
opennds_node = Table(
    "opennds_node", metadata,
    Column("gatewayhash", String(64), primary_key=True),
    Column("venue_id", Integer, nullable=False),
    Column("gatewaymac", String(17), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),      # its last poll (to the minute) or guest
    Index("ix_opennds_node_venue", "venue_id"),
)

# A venue's own settings laid over the chain's (`setting`, which are also the main venue's).
venue_setting = Table(
    "venue_setting", metadata,
    Column("venue_id", Integer, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

verification = Table(
    "verification", metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("phone", String(20), nullable=False),         # E.164, "+79161234567"
    Column("mac", String(17), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("call_number", String(20), nullable=False),   # E.164 number the guest must call
    Column("state", String(10), nullable=False),          # pending | confirmed | expired | failed
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("failure", Text),
    Column("failure_code", Integer),  # the provider's error code, when it answered one
    Column("venue_id", Integer, nullable=False, server_default=text("1")),
    # A remote openNDS gateway's token for the device (sha256 of its hid and the faskey)
    Column("gateway_token", String(64)),
    Index("ix_verification_phone_state", "phone", "state"),
    Index("ix_verification_created", "created_at"),
    Index("ix_verification_state_expires", "state", "expires_at"),  # the maintenance expiry
    Index("ix_verification_venue_created", "venue_id", "created_at"),  # a venue's log
)

access_session = Table(
    "access_session", metadata,
    Column("id", Integer, primary_key=True),
    Column("verification_id", Integer, ForeignKey("verification.id")),
    Column("mac", String(17), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("phone", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(40)),   # expired | revoked | replaced | firewall-missing …
    # When the firewall first confirmed it let the MAC through; until then the guest is shown
    # "connecting", never "online".
    Column("firewall_at", UTCDateTime),
    # The outcome of the last RADIUS Disconnect-Message sent for this session (radius backend).
    Column("disconnect_result", String(200)),
    Column("venue_id", Integer, nullable=False, server_default=text("1")),
    Index("ix_access_session_mac", "mac"),
    Index("ix_access_session_phone", "phone"),  # the per-phone device limit, on every call
    Index("ix_access_session_verification", "verification_id"),
    Index("ix_access_session_open", "ended_at", "ends_at"),
    Index("ix_access_session_started", "started_at"),
    Index("ix_access_session_venue_open", "venue_id", "ended_at"),  # a venue's online count
)

notification = Table(
    "notification", metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("remote_addr", String(45), nullable=False),
    Column("phone", String(20)),
    Column("ts", Integer),
    Column("fields", Text, nullable=False),     # JSON of what arrived, checksum fields included
    Column("verdict", String(20), nullable=False),  # accepted | unmatched | rejected | replay
    Column("reason", Text, nullable=False),
    Index("ix_notification_phone_ts", "phone", "ts"),
    # A call is acted on once: a second notification with the same phone and ts cannot be
    # recorded as accepted or unmatched, however many arrive at the same instant.
    Index("uq_notification_call", "phone", "ts", unique=True,
          sqlite_where=text("verdict IN ('accepted', 'unmatched')"),
          postgresql_where=text("verdict IN ('accepted', 'unmatched')")),
)

# What a RADIUS router reported in its accounting for an access session: one row per router
# session (Acct-Session-Id), as a device may join, leave and join again within one access
# session. The law asks for the volume of service; the newest row says where to send a
# Disconnect-Message.
nas_session = Table(
    "nas_session", metadata,
    Column("id", Integer, primary_key=True),
    Column("access_session_id", Integer, ForeignKey("access_session.id"), nullable=False),
    Column("nas_ip", String(45), nullable=False),          # NAS-IP-Address, else the source
    Column("nas_identifier", String(64), nullable=False),  # NAS-Identifier ("" when absent)
    Column("nas_session_id", String(64), nullable=False),  # Acct-Session-Id
    Column("user_name", String(64), nullable=False),       # User-Name as the router sent it
    Column("bytes_in", BigInteger, nullable=False),        # from the device (with Gigawords)
    Column("bytes_out", BigInteger, nullable=False),       # to the device
    Column("seconds", Integer, nullable=False),            # Acct-Session-Time
    Column("started_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
    Index("uq_nas_session", "access_session_id", "nas_ip", "nas_session_id", unique=True),
)

# What the firewall has yet to be told: one row per change of a MAC's sessions, written in the
# same transaction as the change. The firewall worker reads the MACs, applies their current
# state from access_session, and deletes the rows it applied.
firewall_change = Table(
    "firewall_change", metadata,
    Column("id", Integer, primary_key=True),
    Column("mac", String(17), nullable=False),
    Column("queued_at", UTCDateTime, nullable=False),
)


setting = Table(
    "setting", metadata,
    Column("key", String(64), primary_key=True),     # "section.key", e.g. "venue.name"
    Column("value", Text, nullable=False),            # JSON
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

asset = Table(
    "asset", metadata,
    Column("name", String(32), primary_key=True),     # "logo"
    Column("content_type", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

admin_user = Table(
    "admin_user", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Carried in the signed session cookie; signing out or a new password adds one, which ends
    # every session of this admin (a copied cookie included).
    Column("session_epoch", Integer, nullable=False, server_default=text("0")),
    # The per-account lock: sign-in attempts from browsers the account does not know, counted
    # until one succeeds (see auth.claim_attempt).
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("last_failed_at", UTCDateTime),
    Column("venue_id", Integer),  # the one venue this admin manages; NULL: the whole chain
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("admin", String(64), nullable=False),
    Column("remote_addr", String(45), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("venue_id", Integer),  # the acting admin's venue; NULL: a chain admin
    Index("ix_audit_at", "at"),
)


# Phones and devices an admin has blocked: their attempts go no further than the guest form.
blocked = Table(
    "blocked", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(5), nullable=False),        # phone | mac
    Column("value", String(20), nullable=False),      # E.164 phone or "aa:bb:cc:dd:ee:ff"
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
    Index("uq_blocked", "kind", "value", unique=True),
)


def utcnow():
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def connect(url):
    """An engine for url. SQLite gets WAL, foreign keys and a busy timeout on every connection;
    PostgreSQL (postgresql+psycopg://…) a pool sized for a node's threads."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # SQLAlchemy, not the driver, starts transactions (see _sqlite_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # A write transaction takes SQLite's write lock when it starts, so two writers queue
            # on the busy timeout instead of one failing at once when it upgrades a read.
            # Straight to the driver: this runs for every connection a request uses.
            immediate = conn.get_execution_options().get("callpass_write")
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    else:
        if url.startswith("postgresql://"):  # SQLAlchemy would pick psycopg2; callpass uses psycopg 3
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        # A missing driver is named by config.storage_problems before any command gets here.
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)

        @event.listens_for(engine, "begin")
        def _postgresql_begin(conn):
            # The same rule as SQLite's write lock, across every node: one writer at a time,
            # for as long as its transaction lasts.
            if conn.get_execution_options().get("callpass_write"):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")

    engine.callpass_write_lock = threading.Lock()
    engine.callpass_writer = engine.execution_options(callpass_write=True)
    return engine


@contextmanager
def begin(engine):
    """A write transaction (`with storage.begin(engine) as conn:`), committed when the block ends.

    One writer at a time: SQLite allows no more and makes the others sleep and retry, and
    PostgreSQL is held to the same rule by an advisory lock, so every node sees the same order
    of writes (one waiting device per phone, one session per call). Within a process writers
    queue on a lock first, which is fair and wakes them at once. So never open one write
    transaction inside another, and keep slow work (password hashing, the provider, the
    firewall) out of them.
    """
    with engine.callpass_write_lock:
        with engine.callpass_writer.begin() as conn:
            yield conn


@contextmanager
def job_lock(engine, job):
    """`with job_lock(engine, "maintenance") as mine:` — whether this process should run the
    background job now. Always on SQLite (one node). On PostgreSQL only one node at a time: an
    advisory lock held for the block, which the server also lets go when a node dies."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = JOB_LOCKS[job]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        mine = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        try:
            yield mine
        finally:
            if mine:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


# The newest revision in migrations/versions (test_storage checks that it is Alembic's head). A
# start whose database has it already reads one row and never loads Alembic, which alone takes
# 0.2 s of every start; Alembic is imported only where it is used.
SCHEMA_HEAD = "0003"


def upgrade(engine):
    """Bring the database to the newest schema (Alembic, portal/migrations). Safe on every start,
    and on several nodes starting at once: PostgreSQL runs one upgrade at a time (a lock)."""
    with begin(engine) as conn:
        if storage_legacy.is_legacy(conn):
            storage_legacy.bring_to_baseline(conn)
        if current_revision(conn) == SCHEMA_HEAD:
            return
        from alembic import command as alembic_command
        from alembic.config import Config as AlembicConfig

        script = migration_scripts()
        current = current_revision(conn)
        if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
            raise RuntimeError(f"database schema {current} is newer than this callpass "
                               f"({script.get_current_head()}); upgrade callpass")
        log.info("upgrading the database schema from %s to %s", current or "none",
                 script.get_current_head())
        settings = AlembicConfig()
        settings.set_main_option("script_location", str(MIGRATIONS))
        settings.attributes["connection"] = conn
        alembic_command.upgrade(settings, "head")


def current_revision(conn):
    """The database's schema revision (Alembic's version table), None before the first upgrade."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def schema_revision(engine):
    """The database's schema revision (None before the first upgrade) and this callpass's."""
    with engine.connect() as conn:
        return current_revision(conn), migration_scripts().get_current_head()


@functools.cache
def migration_scripts():
    """The revisions in portal/migrations/versions, read once per process."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))
