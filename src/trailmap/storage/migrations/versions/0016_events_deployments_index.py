"""events: a partial index of deployments and rollbacks by (org_id, service, subject,
type, time_us), covering source and event_id, for the guardrails' counts of a service's
earlier deployments

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 20:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEPLOYMENTS_ONLY = "type IN ('deployment', 'rollback')"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_deployments"),
            ["org_id", "service", "subject", "type", "time_us", "source", "event_id"],
            unique=False,
            sqlite_where=sa.text(_DEPLOYMENTS_ONLY),
            postgresql_where=sa.text(_DEPLOYMENTS_ONLY),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_events_deployments"),
            sqlite_where=sa.text(_DEPLOYMENTS_ONLY),
            postgresql_where=sa.text(_DEPLOYMENTS_ONLY),
        )
