"""escalations and the crisis follow-up state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("rule_ids", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_escalations_conversation_id", "escalations", ["conversation_id"], unique=False
    )
    op.create_index("ix_escalations_patient_id", "escalations", ["patient_id"], unique=False)
    op.create_index(
        "ix_escalations_status_priority", "escalations", ["status", "priority"], unique=False
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("safety_protocol", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("safety_protocol")
    op.drop_index("ix_escalations_status_priority", table_name="escalations")
    op.drop_index("ix_escalations_patient_id", table_name="escalations")
    op.drop_index("ix_escalations_conversation_id", table_name="escalations")
    op.drop_table("escalations")
