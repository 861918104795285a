"""The schema of callpass before migrations (schema version 6): every table, created where absent.

A new database gets them all. A database from a release before migrations arrives here after
storage_legacy brought its existing tables up to version 6; this adds the tables it lacks.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CALL_VERDICTS = sa.text("verdict IN ('accepted', 'unmatched')")


def upgrade():
    present = set(sa.inspect(op.get_bind()).get_table_names())

    def table(name, *columns, indexes=()):
        if name in present:
            return
        op.create_table(name, *columns)
        for index_name, index_columns, options in indexes:
            op.create_index(index_name, name, index_columns, **options)

    table("verification",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("token", sa.String(64), nullable=False),
          sa.Column("phone", sa.String(20), nullable=False),
          sa.Column("mac", sa.String(17), nullable=False),
          sa.Column("ip", sa.String(45), nullable=False),
          sa.Column("call_number", sa.String(20), nullable=False),
          sa.Column("state", sa.String(10), nullable=False),
          sa.Column("created_at", sa.DateTime(), nullable=False),
          sa.Column("expires_at", sa.DateTime(), nullable=False),
          sa.Column("confirmed_at", sa.DateTime(), nullable=True),
          sa.Column("failure", sa.Text(), nullable=True),
          sa.Column("failure_code", sa.Integer(), nullable=True),
          sa.PrimaryKeyConstraint("id"),
          sa.UniqueConstraint("token"),
          indexes=[("ix_verification_created", ["created_at"], {}),
                   ("ix_verification_phone_state", ["phone", "state"], {}),
                   ("ix_verification_state_expires", ["state", "expires_at"], {})])
    table("access_session",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("verification_id", sa.Integer(), nullable=True),
          sa.Column("mac", sa.String(17), nullable=False),
          sa.Column("ip", sa.String(45), nullable=False),
          sa.Column("phone", sa.String(20), nullable=False),
          sa.Column("started_at", sa.DateTime(), nullable=False),
          sa.Column("ends_at", sa.DateTime(), nullable=False),
          sa.Column("ended_at", sa.DateTime(), nullable=True),
          sa.Column("end_reason", sa.String(40), nullable=True),
          sa.Column("firewall_at", sa.DateTime(), nullable=True),
          sa.Column("disconnect_result", sa.String(200), nullable=True),
          sa.ForeignKeyConstraint(["verification_id"], ["verification.id"]),
          sa.PrimaryKeyConstraint("id"),
          indexes=[("ix_access_session_mac", ["mac"], {}),
                   ("ix_access_session_open", ["ended_at", "ends_at"], {}),
                   ("ix_access_session_phone", ["phone"], {}),
                   ("ix_access_session_started", ["started_at"], {}),
                   ("ix_access_session_verification", ["verification_id"], {})])
    table("notification",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("received_at", sa.DateTime(), nullable=False),
          sa.Column("remote_addr", sa.String(45), nullable=False),
          sa.Column("phone", sa.String(20), nullable=True),
          sa.Column("ts", sa.Integer(), nullable=True),
          sa.Column("fields", sa.Text(), nullable=False),
          sa.Column("verdict", sa.String(20), nullable=False),
          sa.Column("reason", sa.Text(), nullable=False),
          sa.PrimaryKeyConstraint("id"),
          indexes=[("ix_notification_phone_ts", ["phone", "ts"], {}),
                   ("uq_notification_call", ["phone", "ts"],
                    {"unique": True, "sqlite_where": CALL_VERDICTS,
                     "postgresql_where": CALL_VERDICTS})])
    table("nas_session",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("access_session_id", sa.Integer(), nullable=False),
          sa.Column("nas_ip", sa.String(45), nullable=False),
          sa.Column("nas_identifier", sa.String(64), nullable=False),
          sa.Column("nas_session_id", sa.String(64), nullable=False),
          sa.Column("user_name", sa.String(64), nullable=False),
          sa.Column("bytes_in", sa.BigInteger(), nullable=False),
          sa.Column("bytes_out", sa.BigInteger(), nullable=False),
          sa.Column("seconds", sa.Integer(), nullable=False),
          sa.Column("started_at", sa.DateTime(), nullable=False),
          sa.Column("updated_at", sa.DateTime(), nullable=False),
          sa.Column("stopped_at", sa.DateTime(), nullable=True),
          sa.ForeignKeyConstraint(["access_session_id"], ["access_session.id"]),
          sa.PrimaryKeyConstraint("id"),
          indexes=[("uq_nas_session", ["access_session_id", "nas_ip", "nas_session_id"],
                    {"unique": True})])
    table("firewall_change",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("mac", sa.String(17), nullable=False),
          sa.Column("queued_at", sa.DateTime(), nullable=False),
          sa.PrimaryKeyConstraint("id"))
    table("setting",
          sa.Column("key", sa.String(64), nullable=False),
          sa.Column("value", sa.Text(), nullable=False),
          sa.Column("updated_at", sa.DateTime(), nullable=False),
          sa.Column("updated_by", sa.String(64), nullable=False),
          sa.PrimaryKeyConstraint("key"))
    table("asset",
          sa.Column("name", sa.String(32), nullable=False),
          sa.Column("content_type", sa.String(32), nullable=False),
          sa.Column("data", sa.LargeBinary(), nullable=False),
          sa.Column("updated_at", sa.DateTime(), nullable=False),
          sa.PrimaryKeyConstraint("name"))
    table("admin_user",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("name", sa.String(64), nullable=False),
          sa.Column("password_hash", sa.String(255), nullable=False),
          sa.Column("created_at", sa.DateTime(), nullable=False),
          sa.Column("session_epoch", sa.Integer(), server_default=sa.text("0"), nullable=False),
          sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
          sa.Column("last_failed_at", sa.DateTime(), nullable=True),
          sa.PrimaryKeyConstraint("id"),
          sa.UniqueConstraint("name"))
    table("audit",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("at", sa.DateTime(), nullable=False),
          sa.Column("admin", sa.String(64), nullable=False),
          sa.Column("remote_addr", sa.String(45), nullable=False),
          sa.Column("action", sa.String(64), nullable=False),
          sa.Column("detail", sa.Text(), nullable=False),
          sa.PrimaryKeyConstraint("id"),
          indexes=[("ix_audit_at", ["at"], {})])
    table("blocked",
          sa.Column("id", sa.Integer(), nullable=False),
          sa.Column("kind", sa.String(5), nullable=False),
          sa.Column("value", sa.String(20), nullable=False),
          sa.Column("reason", sa.Text(), nullable=False),
          sa.Column("created_at", sa.DateTime(), nullable=False),
          sa.Column("created_by", sa.String(64), nullable=False),
          sa.PrimaryKeyConstraint("id"),
          indexes=[("uq_blocked", ["kind", "value"], {"unique": True})])
