"""Storage: the tables callpass keeps, behind one SQLAlchemy engine addressed by a database URL.

SQLite is the default (WAL, foreign keys on); any SQLAlchemy URL works, so PostgreSQL can be added
without touching the views. The schema is created and upgraded by `upgrade()`, an explicit step run
by `serve`, `demo`, `fw-sync` and the tests — never at import or in the app factory.
"""

import threading
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone

from sqlalchemy import (BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Table, Text, create_engine, event, inspect, select, text)
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 6


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

schema_info = Table(
    "schema_info", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
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
    Index("ix_verification_phone_state", "phone", "state"),
    Index("ix_verification_created", "created_at"),
    Index("ix_verification_state_expires", "state", "expires_at"),  # the maintenance expiry
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
    Index("ix_access_session_mac", "mac"),
    Index("ix_access_session_phone", "phone"),  # the per-phone device limit, on every call
    Index("ix_access_session_verification", "verification_id"),
    Index("ix_access_session_open", "ended_at", "ends_at"),
    Index("ix_access_session_started", "started_at"),
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
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("admin", String(64), nullable=False),
    Column("remote_addr", String(45), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False),
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
    """An engine for url; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
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
            immediate = conn.get_execution_options().get("callpass_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        engine.callpass_write_lock = threading.Lock()
        engine.callpass_writer = engine.execution_options(callpass_write=True)
        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def begin(engine):
    """A write transaction (`with storage.begin(engine) as conn:`), committed when the block ends.

    SQLite takes one writer at a time and makes the others sleep and retry; within a process
    writers queue on a lock instead, which is fair and wakes them at once. So never open one
    write transaction inside another, and keep slow work (password hashing, the provider, the
    firewall) out of them.
    """
    with getattr(engine, "callpass_write_lock", nullcontext()):
        with getattr(engine, "callpass_writer", engine).begin() as conn:
            yield conn


def upgrade(engine):
    """Create missing tables and record the schema version. Safe to run on every start."""
    metadata.create_all(engine)
    with begin(engine) as conn:
        row = conn.execute(select(schema_info.c.version)).first()
        if row is None:
            conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION))
        elif row.version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {row.version} is newer than this callpass "
                               f"({SCHEMA_VERSION}); upgrade callpass")
        elif row.version < SCHEMA_VERSION:
            if row.version < 2:
                _upgrade_to_2(conn)
            _upgrade_to_3(conn)
            if row.version < 4:
                _add_missing_columns(conn, access_session, ("disconnect_result",))
            _upgrade_to_5(conn)
            _upgrade_to_6(conn)
            conn.execute(schema_info.update().values(version=SCHEMA_VERSION))


def _upgrade_to_2(conn):
    """Version 2: access_session.firewall_at, one accepted notification per call, new indexes."""
    conn.execute(text("ALTER TABLE access_session ADD COLUMN firewall_at DATETIME"))
    # Sessions opened by earlier versions were given to the firewall at once.
    conn.execute(text("UPDATE access_session SET firewall_at = started_at"))
    # Earlier versions could accept one call twice; the later rows become replays.
    conn.execute(text(
        "UPDATE notification SET verdict = 'replay' WHERE verdict IN ('accepted', 'unmatched') "
        "AND id NOT IN (SELECT MIN(id) FROM notification "
        "WHERE verdict IN ('accepted', 'unmatched') GROUP BY phone, ts)"))
    for table in (verification, access_session, notification):
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _upgrade_to_3(conn):
    """Version 3: admin_user.session_epoch, failed_logins and last_failed_at.

    A database from before admin accounts existed got admin_user from create_all just now,
    columns included, so only the missing ones are added.
    """
    _add_missing_columns(conn, admin_user, ("session_epoch", "failed_logins", "last_failed_at"))


def _upgrade_to_5(conn):
    """Version 5: verification.failure_code, read once from the text earlier versions stored
    ("provider error 4: …")."""
    _add_missing_columns(conn, verification, ("failure_code",))
    failed = conn.execute(select(verification.c.id, verification.c.failure).where(
        verification.c.failure.like("provider error %"),
        verification.c.failure_code.is_(None))).all()
    for row in failed:
        code = row.failure.removeprefix("provider error ").partition(":")[0]
        if code.isdigit():
            conn.execute(verification.update().where(verification.c.id == row.id)
                         .values(failure_code=int(code)))


def _upgrade_to_6(conn):
    """Version 6: the blocked table. create_all made it above; its unique index is made here
    too, for a database where an interrupted start left the table without it."""
    for index in blocked.indexes:
        index.create(conn, checkfirst=True)


def _add_missing_columns(conn, table, names):
    """ALTER TABLE … ADD COLUMN for each of names the table lacks (typed for conn's database)."""
    present = {column["name"] for column in inspect(conn).get_columns(table.name)}
    for name in names:
        if name not in present:
            column = table.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            default = " NOT NULL DEFAULT 0" if column.server_default is not None else ""
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}{default}"))
