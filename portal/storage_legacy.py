"""The schema steps of the releases before migrations (schema_info versions 1–6). Frozen: new
schema changes are Alembic revisions in portal/migrations/versions.

A database from such a release has a schema_info table. `bring_to_baseline` gives the tables it
has the columns and indexes of version 6 and drops schema_info; the baseline revision then
creates the tables it lacks, and the later revisions run as on any database.
"""

import sqlalchemy as sa

BASELINE_VERSION = 6

# (table, column, type) added after version 1, in the order the releases added them.
ADDED_COLUMNS = [
    ("access_session", "firewall_at", sa.DateTime()),                       # version 2
    ("admin_user", "session_epoch", sa.Integer()),                          # version 3
    ("admin_user", "failed_logins", sa.Integer()),                          # version 3
    ("admin_user", "last_failed_at", sa.DateTime()),                        # version 3
    ("access_session", "disconnect_result", sa.String(200)),                # version 4
    ("verification", "failure_code", sa.Integer()),                         # version 5
]
COUNTERS = {("admin_user", "session_epoch"), ("admin_user", "failed_logins")}  # NOT NULL DEFAULT 0

# Every index of version 6, by table; made where the table exists and the index does not.
INDEXES = {
    "verification": [
        "CREATE INDEX IF NOT EXISTS ix_verification_phone_state ON verification (phone, state)",
        "CREATE INDEX IF NOT EXISTS ix_verification_created ON verification (created_at)",
        "CREATE INDEX IF NOT EXISTS ix_verification_state_expires ON verification (state, expires_at)",
    ],
    "access_session": [
        "CREATE INDEX IF NOT EXISTS ix_access_session_mac ON access_session (mac)",
        "CREATE INDEX IF NOT EXISTS ix_access_session_phone ON access_session (phone)",
        "CREATE INDEX IF NOT EXISTS ix_access_session_verification ON access_session (verification_id)",
        "CREATE INDEX IF NOT EXISTS ix_access_session_open ON access_session (ended_at, ends_at)",
        "CREATE INDEX IF NOT EXISTS ix_access_session_started ON access_session (started_at)",
    ],
    "notification": [
        "CREATE INDEX IF NOT EXISTS ix_notification_phone_ts ON notification (phone, ts)",
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_notification_call ON notification (phone, ts) "
        "WHERE verdict IN ('accepted', 'unmatched')",
    ],
    "blocked": ["CREATE UNIQUE INDEX IF NOT EXISTS uq_blocked ON blocked (kind, value)"],
    "audit": ["CREATE INDEX IF NOT EXISTS ix_audit_at ON audit (at)"],
}


def is_legacy(conn):
    """Whether conn's database was made by a release before migrations."""
    return sa.inspect(conn).has_table("schema_info")


def bring_to_baseline(conn):
    """Give the existing tables of a pre-migration database the shape of version 6."""
    version = conn.execute(sa.text("SELECT version FROM schema_info")).scalar() or 1
    if version > BASELINE_VERSION:
        raise RuntimeError(f"database schema {version} is not one callpass knows")
    tables = set(sa.inspect(conn).get_table_names())
    had_firewall_at = _has_column(conn, "access_session", "firewall_at")
    for table, column, kind in ADDED_COLUMNS:
        if table in tables and not _has_column(conn, table, column):
            extra = " NOT NULL DEFAULT 0" if (table, column) in COUNTERS else ""
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} "
                                 f"{kind.compile(dialect=conn.dialect)}{extra}"))
    if "access_session" in tables and not had_firewall_at:
        # Sessions opened by version 1 were given to the firewall at once: they stay online.
        conn.execute(sa.text("UPDATE access_session SET firewall_at = started_at"))
    if "notification" in tables and version < 2:
        # Version 1 could accept one call twice; the later rows become replays.
        conn.execute(sa.text(
            "UPDATE notification SET verdict = 'replay' WHERE verdict IN ('accepted', 'unmatched') "
            "AND id NOT IN (SELECT MIN(id) FROM notification "
            "WHERE verdict IN ('accepted', 'unmatched') GROUP BY phone, ts)"))
    if "verification" in tables and version < 5:
        _read_failure_codes(conn)
    for table, statements in INDEXES.items():
        if table in tables:
            for statement in statements:
                conn.execute(sa.text(statement))
    conn.execute(sa.text("DROP TABLE schema_info"))


def _has_column(conn, table, column):
    inspector = sa.inspect(conn)
    return inspector.has_table(table) and column in {c["name"] for c in inspector.get_columns(table)}


def _read_failure_codes(conn):
    """Version 5 kept the provider's error code apart from the text earlier versions stored
    ("provider error 4: …"); it is read once from the text."""
    failed = conn.execute(sa.text(
        "SELECT id, failure FROM verification WHERE failure LIKE 'provider error %' "
        "AND failure_code IS NULL")).all()
    for row in failed:
        code = row.failure.removeprefix("provider error ").partition(":")[0]
        if code.isdigit():
            conn.execute(sa.text("UPDATE verification SET failure_code = :code WHERE id = :id"),
                         {"code": int(code), "id": row.id})
