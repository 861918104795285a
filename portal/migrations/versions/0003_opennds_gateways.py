"""openNDS gateways as venues of a chain: callpass as their remote FAS (portal/opennds_remote.py);
and a venue named by the Wi-Fi network in RADIUS's Called-Station-Id.

A venue may name an openNDS gateway (its gatewayname) with that gateway's faskey; a verification
started through one keeps the token the gateway will let its device in by. openNDS makes each
gateway device's name its own (it adds " Node:<its MAC> "): the nodes callpass has heard from,
and when each last asked, are in opennds_node.

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
    op.create_index("ix_venue_opennds_gateway", "venue", ["opennds_gateway"], unique=True)
    op.add_column("venue", sa.Column("called_station", sa.String(64), nullable=True))
    op.create_index("ix_venue_called_station", "venue", ["called_station"], unique=True)
    op.add_column("verification", sa.Column("gateway_token", sa.String(64), nullable=True))
    op.create_table(
        "opennds_node",
        sa.Column("gatewayhash", sa.String(64), nullable=False),
        sa.Column("venue_id", sa.Integer(), nullable=False),
        sa.Column("gatewaymac", sa.String(17), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("gatewayhash"),
    )
    op.create_index("ix_opennds_node_venue", "opennds_node", ["venue_id"])


def downgrade():
    op.drop_table("opennds_node")
    op.drop_column("verification", "gateway_token")
    op.drop_index("ix_venue_opennds_gateway", table_name="venue")
    op.drop_index("ix_venue_called_station", table_name="venue")
    for column in ("called_station", "opennds_faskey", "opennds_gateway"):
        op.drop_column("venue", column)
