"""SQLAlchemy 2 typed tables: patients and their channel identities, conversations, messages,
audit events. Alembic migrations in core/migrations mirror this file."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column, relationship

from core.crypto import BLIND_INDEX_OF, EncryptedJSON, EncryptedText, index_default


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite has no BIGINT autoincrement; Integer there, BigInteger elsewhere.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def blind_index_of(source: str, **options: Any) -> MappedColumn[Any]:
    """The blind index of an encrypted column (core/crypto.py): filled on insert, and what
    rows are looked up by (`address_hash == blind_index(number)`)."""
    return mapped_column(
        String(64), default=index_default(source), info={BLIND_INDEX_OF: source}, **options
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    preferred_language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    identities: Mapped[list[ChannelIdentity]] = relationship(back_populates="patient")


class ChannelIdentity(Base):
    """How one patient is reached on one channel: a phone number, a web session, an API id.

    `address` is the channel's own key; for web sessions it is a hash of the session token so
    a leaked database does not hand out live sessions. It is encrypted; look-ups go through
    `address_hash`.
    """

    __tablename__ = "channel_identities"
    __table_args__ = (
        UniqueConstraint("channel", "address_hash", name="uq_identity_channel_address_hash"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(EncryptedText)
    address_hash: Mapped[str] = blind_index_of("address")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="identities")


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    identity_id: Mapped[str] = mapped_column(
        ForeignKey("channel_identities.id", ondelete="CASCADE"), unique=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(8), default="bot")
    language: Mapped[str] = mapped_column(String(8))
    safety_level: Mapped[str] = mapped_column(String(16), default="none")
    safety_rule_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    triage: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON)
    # The crisis follow-up in progress (C-SSRS screener step and answers), None when none is.
    safety_protocol: Mapped[dict[str, Any] | None] = mapped_column(EncryptedJSON)
    needs_follow_up: Mapped[bool] = mapped_column(Boolean, default=False)
    # Consecutive turns the assistant could not answer; two in a row open a case for staff.
    unanswered_streak: Mapped[int] = mapped_column(Integer, default=0)
    # Set when a verified link joined this conversation's patient to another: the story goes on
    # in that conversation, this one stays as it was for the record.
    merged_into: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "vendor_message_id", name="uq_message_vendor_id"),
        Index("ix_messages_conversation_seq", "conversation_id", "seq"),
        Index("ix_messages_follow_up", "needs_follow_up"),
    )

    # seq orders messages globally (and so within a conversation) without trusting clocks.
    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    sender: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(EncryptedText)
    language: Mapped[str | None] = mapped_column(String(8))
    buttons: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    vendor_message_id: Mapped[str | None] = mapped_column(String(128), index=True)
    vendor_ids: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Holds phone numbers (from, to) and channel details: encrypted like the text.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", EncryptedJSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    needs_follow_up: Mapped[bool] = mapped_column(Boolean, default=False)
    in_reply_to: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    # How long the dialogue core (Rasa and its actions) took for this inbound message; the
    # platform's own share of a turn is the rest.
    dialogue_ms: Mapped[float | None] = mapped_column(Float)


class Escalation(Base):
    """A case for clinic staff. One active case (open or claimed) per conversation; a later,
    graver reason raises its priority instead of opening another. A case handed back to the bot
    or resolved is closed: the next reason opens a new one.

    status: open (waiting for staff) -> claimed (a staff member has the conversation, the bot is
    quiet) -> handed_back (the bot has the conversation again) | resolved."""

    __tablename__ = "escalations"
    __table_args__ = (Index("ix_escalations_status_priority", "status", "priority"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    patient_id: Mapped[str] = mapped_column(String(32), index=True)
    priority: Mapped[str] = mapped_column(String(16))  # immediate | high | normal
    # emergency | crisis | triage | request | unanswered
    reason: Mapped[str] = mapped_column(String(32))
    rule_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[str | None] = mapped_column(EncryptedText)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Routing: a claim is due by `due_at` (then supervisors are told); on-call staff are
    # reminded at `next_notify_at` while nobody has claimed it.
    due_at: Mapped[datetime | None] = mapped_column()
    next_notify_at: Mapped[datetime | None] = mapped_column()
    notify_count: Mapped[int] = mapped_column(Integer, default=0)
    supervisor_notified_at: Mapped[datetime | None] = mapped_column()
    # Who has it: a Mattermost user id ("mattermost:<id>") or a console name ("console:<name>").
    claimed_by_id: Mapped[str | None] = mapped_column(String(64))
    claimed_by_name: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column()
    handed_back_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    feedback: Mapped[str | None] = mapped_column(String(16))  # good | okay | poor
    # The staff tool's case channel and case card (Mattermost channel id and post id).
    staff_channel_id: Mapped[str | None] = mapped_column(String(64), index=True)
    staff_card_id: Mapped[str | None] = mapped_column(String(64))
    # The patient's call ended before staff answered and no text could reach them.
    callback_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class KbIngestJob(Base):
    """A document uploaded through the admin API, and what ingesting it did."""

    __tablename__ = "kb_ingest_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    filename: Mapped[str] = mapped_column(String(255))
    stored_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class SmsConsent(Base):
    """Whether a phone number may be texted: carrier keywords (STOP, START) recorded in our own
    database, checked before every outbound SMS whoever sends it."""

    __tablename__ = "sms_consent"

    address_hash: Mapped[str] = blind_index_of("address", primary_key=True)
    address: Mapped[str] = mapped_column(EncryptedText)  # E.164
    status: Mapped[str] = mapped_column(String(16))  # opted_in | opted_out
    keyword: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))  # keyword | carrier (Twilio error 21610)
    message_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class VoiceCall(Base):
    """One phone call: who called (E.164, from the PSTN or a PBX's SIP trunk), its conversation,
    whether our media stream is attached, and any transfer. Any web process can act on a live
    call (a claim in the console transfers it) because Twilio's REST API controls it."""

    __tablename__ = "voice_calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    caller: Mapped[str] = mapped_column(EncryptedText)
    called: Mapped[str | None] = mapped_column(EncryptedText)
    via: Mapped[str] = mapped_column(String(8))  # pstn | sip
    mode: Mapped[str] = mapped_column(String(8))  # stream | gather
    status: Mapped[str] = mapped_column(String(16))  # ringing | in-progress | completed ...
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    # Why staff were asked for on this call, and the transfer's outcome.
    staff_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    transfer_to: Mapped[str | None] = mapped_column(String(16))  # oncall | staff
    transfer_status: Mapped[str | None] = mapped_column(String(16))
    follow_up_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class DeliveryEvent(Base):
    """A delivery status report from the SMS provider. Keyed by the provider's message id, since
    a report can arrive before the send that produced it has been recorded."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("vendor_message_id", "status", name="uq_delivery_status"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    vendor_message_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageMedia(Base):
    """A picture a patient sent (MMS): kept with the conversation for staff, never given to a
    language model. Refused files keep a row with the reason and no content."""

    __tablename__ = "message_media"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[str] = mapped_column(String(32), index=True)
    content_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    stored_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # stored | refused | failed
    reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneLinkCode(Base):
    """A one-time code sent by SMS to link a phone to a patient. Only its HMAC is stored."""

    __tablename__ = "phone_link_codes"
    __table_args__ = (
        Index("ix_phone_link_codes_address_hash_created", "address_hash", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    patient_id: Mapped[str] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(EncryptedText)  # E.164
    address_hash: Mapped[str] = blind_index_of("address")
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(
        String(16), default="pending"
    )  # pending|used|locked|replaced
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class StaffUser(Base):
    """A person who signs in to the console and admin API (webapp/auth.py).

    `username` is stored in lower case, which makes it unique regardless of case. Bumping
    `session_version` (sign-out, new password, new role, disabled) ends all of its sessions."""

    __tablename__ = "staff_users"
    __table_args__ = (UniqueConstraint("username", name="uq_staff_users_username"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # admin | staff | auditor
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """Append-only record of who did what to which conversation. Never holds message text.

    Hash-chained (core/audit.py fills `prev_hash` and `hash` on insert, however the row is
    added); triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    # One successor per event: a fork of the chain fails to insert instead of being stored.
    __table_args__ = (Index("ux_audit_events_prev_hash", "prev_hash", unique=True),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(32), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# The audit chain's listeners (imported here so that every writer of AuditEvent has them).
from core import audit as _audit_chain  # noqa: E402, F401
