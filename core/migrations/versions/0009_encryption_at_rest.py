"""encryption at rest of message text and patient fields

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 22:30:00

Encrypted columns become TEXT (a token is longer than the value), look-ups move to blind index
columns (`address_hash`), and every value already stored is encrypted with the first key of
ENCRYPTION_KEYS (core/crypto.py) while its blind index is filled. `sms_consent` is keyed by
the blind index instead of the number.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from core import crypto

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What this revision encrypts, named here rather than read from core/orm.py: a later revision
# may encrypt more, in columns that do not exist yet at this point.
TABLES = (
    crypto.EncryptedTable("messages", "seq", ("text", "metadata")),
    crypto.EncryptedTable("conversations", "id", ("triage", "safety_protocol")),
    crypto.EncryptedTable("escalations", "id", ("summary",)),
    crypto.EncryptedTable("channel_identities", "id", ("address",), (("address_hash", "address"),)),
    crypto.EncryptedTable("phone_link_codes", "id", ("address",), (("address_hash", "address"),)),
    crypto.EncryptedTable("voice_calls", "call_sid", ("caller", "called")),
)
# (table, column, type before, nullable) for columns whose type becomes TEXT.
RETYPED = (
    ("messages", "metadata", sa.JSON(), False),
    ("conversations", "triage", sa.JSON(), True),
    ("conversations", "safety_protocol", sa.JSON(), True),
    ("channel_identities", "address", sa.String(length=255), False),
    ("phone_link_codes", "address", sa.String(length=32), False),
    ("voice_calls", "caller", sa.String(length=64), False),
    ("voice_calls", "called", sa.String(length=64), True),
)


def _retype(to_text: bool) -> None:
    for table_name, column, before, nullable in RETYPED:
        new, old = (sa.Text(), before) if to_text else (before, sa.Text())
        using = (
            f"{column}::text"
            if to_text
            else f"{column}::{'json' if isinstance(before, sa.JSON) else 'varchar'}"
        )
        with op.batch_alter_table(table_name) as batch:
            batch.alter_column(
                column,
                type_=new,
                existing_type=old,
                existing_nullable=nullable,
                postgresql_using=using,
            )


def _consent_rows() -> list[Any]:
    consent = sa.table(
        "sms_consent",
        *(sa.column(name) for name in ("address", "status", "keyword", "source", "message_id")),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    return list(op.get_bind().execute(sa.select(consent)).mappings())


def _consent_table(keyed_by_hash: bool) -> sa.Table:
    address = (
        [
            sa.Column("address_hash", sa.String(length=64), nullable=False),
            sa.Column("address", sa.Text(), nullable=False),
        ]
        if keyed_by_hash
        else [sa.Column("address", sa.String(length=32), nullable=False)]
    )
    return op.create_table(
        "sms_consent",
        *address,
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address_hash" if keyed_by_hash else "address"),
    )


def upgrade() -> None:
    ring = crypto.keyring()
    _retype(to_text=True)
    for table_name in ("channel_identities", "phone_link_codes"):
        with op.batch_alter_table(table_name) as batch:
            batch.add_column(sa.Column("address_hash", sa.String(length=64), nullable=True))
    crypto.reencrypt(op.get_bind(), ring, TABLES)

    with op.batch_alter_table("channel_identities") as batch:
        batch.alter_column("address_hash", existing_type=sa.String(length=64), nullable=False)
        batch.drop_constraint("uq_identity_channel_address", type_="unique")
        batch.create_unique_constraint(
            "uq_identity_channel_address_hash", ["channel", "address_hash"]
        )
    op.drop_index("ix_phone_link_codes_address_created", table_name="phone_link_codes")
    with op.batch_alter_table("phone_link_codes") as batch:
        batch.alter_column("address_hash", existing_type=sa.String(length=64), nullable=False)
    op.create_index(
        "ix_phone_link_codes_address_hash_created",
        "phone_link_codes",
        ["address_hash", "created_at"],
    )

    # The number was the primary key: the table is rebuilt keyed by its blind index.
    rows = _consent_rows()
    op.drop_table("sms_consent")
    consent = _consent_table(keyed_by_hash=True)
    if rows:
        op.bulk_insert(
            consent,
            [
                {
                    **row,
                    "address": ring.encrypt(ring.decrypt(row["address"])),
                    "address_hash": ring.blind_index(ring.decrypt(row["address"])),
                }
                for row in rows
            ],
        )


def downgrade() -> None:
    ring = crypto.keyring()
    bind = op.get_bind()
    # Back to plaintext first: the columns' old types and constraints expect it.
    for spec in (*TABLES, crypto.EncryptedTable("sms_consent", "address_hash", ("address",))):
        raw = sa.table(spec.name, *(sa.column(name) for name in (spec.key, *spec.columns)))
        for row in bind.execute(sa.select(raw)).mappings().all():
            values = {c: ring.decrypt(row[c]) for c in spec.columns if row[c] is not None}
            if values:
                bind.execute(
                    sa.update(raw).where(raw.c[spec.key] == row[spec.key]).values(**values)
                )
    rows = _consent_rows()
    op.drop_table("sms_consent")
    consent = _consent_table(keyed_by_hash=False)
    if rows:
        op.bulk_insert(consent, [dict(row) for row in rows])

    op.drop_index("ix_phone_link_codes_address_hash_created", table_name="phone_link_codes")
    with op.batch_alter_table("phone_link_codes") as batch:
        batch.drop_column("address_hash")
    op.create_index(
        "ix_phone_link_codes_address_created", "phone_link_codes", ["address", "created_at"]
    )
    with op.batch_alter_table("channel_identities") as batch:
        batch.drop_constraint("uq_identity_channel_address_hash", type_="unique")
        batch.drop_column("address_hash")
    _retype(to_text=False)
    with op.batch_alter_table("channel_identities") as batch:
        batch.create_unique_constraint("uq_identity_channel_address", ["channel", "address"])
