"""The schema: the Alembic revisions make exactly the tables storage.py describes, on SQLite and
PostgreSQL; a database from before migrations keeps everything a venue has: a version-1 database
(the first release) keeps its sessions, its log and its guests online; a version-2 one keeps its
admins, who sign in as before; every database gets the block list (version 6)."""

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from portal import auth, blocklist, sessions, storage


def test_the_revisions_make_the_tables_storage_describes(database_url):
    engine = storage.connect(database_url)
    storage.upgrade(engine)
    storage.upgrade(engine)  # a second start changes nothing
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), storage.metadata) == []
    current, head = storage.schema_revision(engine)
    assert current == head
    engine.dispose()


def test_the_schema_head_storage_names_is_alembics():
    """storage.SCHEMA_HEAD lets a start skip Alembic: it must be the newest revision."""
    assert storage.SCHEMA_HEAD == storage.migration_scripts().get_current_head()


def test_a_database_from_a_newer_callpass_is_refused(database_url):
    engine = storage.connect(database_url)
    storage.upgrade(engine)
    with storage.begin(engine) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(RuntimeError, match="newer than this callpass"):
        storage.upgrade(engine)
    engine.dispose()


def assert_upgraded(engine):
    current, head = storage.schema_revision(engine)
    assert current == head
    assert not inspect(engine).has_table("schema_info")

VERSION_1 = """
CREATE TABLE schema_info (id INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (id));
INSERT INTO schema_info VALUES (1, 1);
CREATE TABLE verification (
    id INTEGER NOT NULL, token VARCHAR(64) NOT NULL, phone VARCHAR(20) NOT NULL,
    mac VARCHAR(17) NOT NULL, ip VARCHAR(45) NOT NULL, call_number VARCHAR(20) NOT NULL,
    state VARCHAR(10) NOT NULL, created_at DATETIME NOT NULL, expires_at DATETIME NOT NULL,
    confirmed_at DATETIME, failure TEXT, PRIMARY KEY (id), UNIQUE (token));
CREATE INDEX ix_verification_phone_state ON verification (phone, state);
CREATE INDEX ix_verification_created ON verification (created_at);
CREATE TABLE access_session (
    id INTEGER NOT NULL, verification_id INTEGER, mac VARCHAR(17) NOT NULL,
    ip VARCHAR(45) NOT NULL, phone VARCHAR(20) NOT NULL, started_at DATETIME NOT NULL,
    ends_at DATETIME NOT NULL, ended_at DATETIME, end_reason VARCHAR(40), PRIMARY KEY (id),
    FOREIGN KEY(verification_id) REFERENCES verification (id));
CREATE INDEX ix_access_session_started ON access_session (started_at);
CREATE INDEX ix_access_session_open ON access_session (ended_at, ends_at);
CREATE INDEX ix_access_session_mac ON access_session (mac);
CREATE TABLE notification (
    id INTEGER NOT NULL, received_at DATETIME NOT NULL, remote_addr VARCHAR(45) NOT NULL,
    phone VARCHAR(20), ts INTEGER, fields TEXT NOT NULL, verdict VARCHAR(20) NOT NULL,
    reason TEXT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_notification_phone_ts ON notification (phone, ts);

INSERT INTO verification VALUES (1, 't1', '+79161234567', '02:cc:00:00:00:11', '10.77.0.11',
    '+79001112233', 'confirmed', '2026-11-27 10:00:00', '2099-01-01 00:00:00',
    '2026-11-27 10:01:00', NULL);
INSERT INTO verification VALUES (2, 't2', '+79161234568', '02:cc:00:00:00:12', '10.77.0.12',
    '', 'failed', '2026-11-27 10:00:00', '2026-11-27 10:00:00', NULL,
    'provider error 4: IP address temporarily blocked');
INSERT INTO verification VALUES (3, 't3', '+79161234569', '02:cc:00:00:00:13', '10.77.0.13',
    '', 'failed', '2026-11-27 10:00:00', '2026-11-27 10:00:00', NULL,
    'no provider host answered: ConnectTimeout');
INSERT INTO access_session VALUES (1, 1, '02:cc:00:00:00:11', '10.77.0.11', '+79161234567',
    '2026-11-27 10:01:00', '2099-01-01 00:00:00', NULL, NULL);
-- The first release could accept one call twice (the race this version closes).
INSERT INTO notification VALUES (1, '2026-11-27 10:01:00', '1.2.3.4', '+79161234567', 1700000000,
    '{}', 'accepted', 'confirmed 1 verification(s)');
INSERT INTO notification VALUES (2, '2026-11-27 10:01:00', '1.2.3.4', '+79161234567', 1700000000,
    '{}', 'accepted', 'confirmed 1 verification(s)');
INSERT INTO notification VALUES (3, '2026-11-27 10:02:00', '1.2.3.4', NULL, NULL, '{}', 'rejected',
    'wrong handler token');
"""


def test_a_version_1_database_is_upgraded_without_losing_anything(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    engine = storage.connect(f"sqlite:///{path}")

    storage.upgrade(engine)
    storage.upgrade(engine)  # and again: a second start changes nothing

    assert_upgraded(engine)
    with engine.connect() as conn:
        verdicts = conn.execute(select(storage.notification.c.verdict)
                                .order_by(storage.notification.c.id)).scalars().all()
    assert verdicts == ["accepted", "replay", "rejected"]
    with engine.connect() as conn:
        codes = conn.execute(select(storage.verification.c.failure_code)
                             .order_by(storage.verification.c.id)).scalars().all()
    assert codes == [None, 4, None]  # the provider's code, read once from the old text
    session = sessions.active_session(engine, "02:cc:00:00:00:11")
    assert session.id == 1 and sessions.is_online(session)  # still online, not "connecting"
    # Version 6: the block list, empty, and blocking ends that device's session.
    assert blocklist.entries(engine) == []
    assert blocklist.block(engine, blocklist.MAC, "02:cc:00:00:00:11", "test", "admin") == 1
    assert blocklist.is_blocked(engine, "+79990000000", "02:cc:00:00:00:11")
    engine.dispose()


VERSION_2_ADMIN = """
CREATE TABLE schema_info (id INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (id));
INSERT INTO schema_info VALUES (1, 2);
CREATE TABLE admin_user (
    id INTEGER NOT NULL, name VARCHAR(64) NOT NULL, password_hash VARCHAR(255) NOT NULL,
    created_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (name));
"""


def test_a_version_2_database_keeps_its_admins(tmp_path):
    path = tmp_path / "v2.sqlite3"
    password_hash = auth.generate_password_hash("a long enough secret", method=auth.HASH_METHOD)
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_2_ADMIN)
        db.execute("INSERT INTO admin_user VALUES (1, 'anna', ?, '2026-11-27 10:00:00')",
                   (password_hash,))
    engine = storage.connect(f"sqlite:///{path}")

    storage.upgrade(engine)
    storage.upgrade(engine)

    assert_upgraded(engine)
    row = auth.authenticate(engine, "anna", "a long enough secret")
    assert (row.name, row.session_epoch, row.failed_logins, row.last_failed_at) == (
        "anna", 0, 0, None)
    auth.add_admin(engine, "boris", "another long secret")  # new rows get the defaults
    assert auth.authenticate(engine, "boris", "another long secret").session_epoch == 0
    engine.dispose()
