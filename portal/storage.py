"""Storage: the tables callpass keeps, behind one SQLAlchemy engine addressed by a database URL.

SQLite is the default (WAL, foreign keys on); any SQLAlchemy URL works, so PostgreSQL can be added
without touching the views. The schema is created and upgraded by `upgrade()`, an explicit step run
by `serve`, `demo`, `fw-sync` and the tests — never at import or in the app factory.
"""

from datetime import datetime, timezone

from sqlalchemy import (Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Table,
                        Text, create_engine, event, select)
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 1


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
    Index("ix_verification_phone_state", "phone", "state"),
    Index("ix_verification_created", "created_at"),
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
    Index("ix_access_session_mac", "mac"),
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


def utcnow():
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def connect(url):
    """An engine for url; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine):
    """Create missing tables and record the schema version. Safe to run on every start."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        row = conn.execute(select(schema_info.c.version)).first()
        if row is None:
            conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION))
        elif row.version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {row.version} is newer than this callpass "
                               f"({SCHEMA_VERSION}); upgrade callpass")
        # Later versions add their ALTER steps here, keyed on row.version.

