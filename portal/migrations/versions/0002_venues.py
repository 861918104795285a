"""Venues: a chain's hotspots on one callpass. Venue 1 ("main") is every record so far and the
whole of a single-venue install; a guest whose router names no known venue belongs to it.

Records carry venue_id as a plain number (no foreign key): SQLite cannot add a referencing
column with a default to a filled table, and venues are never deleted.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "venue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("nas_identifier", sa.String(64), nullable=True),
        sa.Column("nas_ip", sa.String(45), nullable=True),
        sa.Column("unifi_site", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
        sa.UniqueConstraint("nas_identifier"),
        sa.UniqueConstraint("nas_ip"),
        sa.UniqueConstraint("unifi_site"),
    )
    op.execute(sa.text("INSERT INTO venue (id, slug, name, created_at) "
                       "VALUES (1, 'main', '', CURRENT_TIMESTAMP)"))
    if op.get_bind().dialect.name == "postgresql":  # the next venue is 2, not 1 again
        op.execute(sa.text("SELECT setval(pg_get_serial_sequence('venue', 'id'), 1)"))
    op.create_table(
        "venue_setting",
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("venue_id", "key"),
    )
    for table in ("verification", "access_session"):
        op.add_column(table, sa.Column("venue_id", sa.Integer(), nullable=False,
                                       server_default=sa.text("1")))
    op.create_index("ix_access_session_venue_open", "access_session", ["venue_id", "ended_at"])
    op.create_index("ix_verification_venue_created", "verification", ["venue_id", "created_at"])
    for table in ("admin_user", "audit"):
        op.add_column(table, sa.Column("venue_id", sa.Integer(), nullable=True))
