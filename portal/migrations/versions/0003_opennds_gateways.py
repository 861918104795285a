"""openNDS gateways as venues of a chain: callpass as their remote FAS (portal/opennds_remote.py).

A venue may name an openNDS gateway (its gatewayname) with that gateway's faskey; a verification
started through one keeps the token the gateway will let its device in by.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("venue", sa.Column("opennds_gateway", sa.String(64), nullable=True))
    op.add_column("venue", sa.Column("opennds_faskey", sa.String(128), nullable=True))
    op.add_column("venue", sa.Column("opennds_seen_at", sa.DateTime(), nullable=True))
    op.create_index("ix_venue_opennds_gateway", "venue", ["opennds_gateway"], unique=True)
    op.add_column("verification", sa.Column("gateway_token", sa.String(64), nullable=True))


def downgrade():
    op.drop_column("verification", "gateway_token")
    op.drop_index("ix_venue_opennds_gateway", table_name="venue")
    for column in ("opennds_seen_at", "opennds_faskey", "opennds_gateway"):
        op.drop_column("venue", column)
