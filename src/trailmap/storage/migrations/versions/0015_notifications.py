"""notification_channels, notification_rules and notification_outbox

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _owned(name: str, *columns: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f(f"fk_{name}_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("org_id", "name", name=op.f(f"uq_{name}_org_id_name")),
    )


def upgrade() -> None:
    _owned(
        "notification_channels",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("settings", _JSON, nullable=False),
        sa.Column("secrets_encrypted", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
    )
    _owned(
        "notification_rules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("match", _JSON, nullable=False),
        sa.Column("channel_ids", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "notification_outbox",
        sa.Column("org_id", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("channel_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=36), nullable=True),
        sa.Column("trigger_key", sa.String(length=200), nullable=False),
        sa.Column("message", _JSON, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_us", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.Column("sent_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id", "channel_id"],
            ["notification_channels.org_id", "notification_channels.id"],
            name=op.f("fk_notification_outbox_org_id_notification_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint(
            "org_id",
            "channel_id",
            "trigger_key",
            name=op.f("uq_notification_outbox_org_id_channel_id_trigger_key"),
        ),
    )
    op.create_index(
        op.f("ix_notification_outbox_status_next_attempt_us"),
        "notification_outbox",
        ["status", "next_attempt_us"],
    )
    op.create_index(
        op.f("ix_notification_outbox_org_id_created_us"),
        "notification_outbox",
        ["org_id", "created_us"],
    )


def downgrade() -> None:
    op.drop_table("notification_outbox")
    op.drop_table("notification_rules")
    op.drop_table("notification_channels")
