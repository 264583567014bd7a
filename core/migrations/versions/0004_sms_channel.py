"""SMS: consent, delivery reports, MMS media, phone link codes, merged conversations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("merged_into", sa.String(length=32), nullable=True))
    op.create_table(
        "sms_consent",
        sa.Column("address", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "delivery_events",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("vendor_message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vendor_message_id", "status", name="uq_delivery_status"),
    )
    op.create_index(
        "ix_delivery_events_vendor_message_id", "delivery_events", ["vendor_message_id"]
    )
    op.create_index("ix_messages_vendor_message_id", "messages", ["vendor_message_id"])
    op.create_table(
        "message_media",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("content_type", sa.String(length=128), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("stored_path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_message_media_message_id", "message_media", ["message_id"])
    op.create_index("ix_message_media_conversation_id", "message_media", ["conversation_id"])
    op.create_table(
        "phone_link_codes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_phone_link_codes_patient_id", "phone_link_codes", ["patient_id"])
    op.create_index(
        "ix_phone_link_codes_address_created", "phone_link_codes", ["address", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("phone_link_codes")
    op.drop_table("message_media")
    op.drop_index("ix_messages_vendor_message_id", table_name="messages")
    op.drop_table("delivery_events")
    op.drop_table("sms_consent")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("merged_into")
