"""staff escalation: case lifecycle (claim, hand back, resolve, feedback), routing timers,
Mattermost case channels, the bot's unanswered-turn streak

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("escalations") as batch:
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_notify_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("notify_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("supervisor_notified_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("claimed_by_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_by_name", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("handed_back_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("feedback", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("staff_channel_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("staff_card_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("callback_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_escalations_staff_channel_id", ["staff_channel_id"])
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("unanswered_streak", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("unanswered_streak")
    with op.batch_alter_table("escalations") as batch:
        batch.drop_index("ix_escalations_staff_channel_id")
        for column in (
            "callback_requested",
            "staff_card_id",
            "staff_channel_id",
            "feedback",
            "resolved_by",
            "resolved_at",
            "handed_back_at",
            "claimed_at",
            "claimed_by_name",
            "claimed_by_id",
            "supervisor_notified_at",
            "notify_count",
            "next_notify_at",
            "due_at",
        ):
            batch.drop_column(column)
