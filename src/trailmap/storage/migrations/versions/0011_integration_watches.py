"""integration_watches: the lease, watch state and status of a cluster integration's watch

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_watches",
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("integration_id", sa.String(length=36), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_us", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("state_saved_us", sa.BigInteger(), nullable=True),
        sa.Column("started_us", sa.BigInteger(), nullable=True),
        sa.Column("last_event_us", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id", "integration_id"],
            ["integrations.org_id", "integrations.id"],
            name=op.f("fk_integration_watches_org_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "integration_id", name=op.f("pk_integration_watches")),
    )


def downgrade() -> None:
    op.drop_table("integration_watches")
