"""phone calls: one row per call (caller, conversation, stream, transfer)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "voice_calls",
        sa.Column("call_sid", sa.String(length=64), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.String(length=32),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("called", sa.String(length=64), nullable=True),
        sa.Column("via", sa.String(length=8), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stream_sid", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("staff_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("transfer_to", sa.String(length=16), nullable=True),
        sa.Column("transfer_status", sa.String(length=16), nullable=True),
        sa.Column("follow_up_sent", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_voice_calls_conversation_id", "voice_calls", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_voice_calls_conversation_id", table_name="voice_calls")
    op.drop_table("voice_calls")
