"""Persistence for conversations: every inbound message is written here before anything reads it.

Each method is one short transaction, so no database connection is held while Rasa thinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.contract import Button, Channel, Inbound, SafetyAssessment, StoredMessage
from core.crypto import blind_index
from core.orm import (
    AuditEvent,
    ChannelIdentity,
    Conversation,
    Escalation,
    Message,
    Patient,
    new_id,
    utcnow,
)

# An inbound message nobody has answered yet (`processing`: a worker claimed it).
UNANSWERED = ("received", "processing")


class TurnAlreadyCompleted(Exception):
    """Another attempt answered this message first (a retry after its process died, racing
    the original): that attempt's replies stand, this one's are dropped."""


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    patient_id: str
    channel: Channel
    mode: str
    language: str
    safety_level: str
    safety_rule_ids: tuple[str, ...]
    triage: dict[str, Any] | None
    safety_protocol: dict[str, Any] | None = None
    unanswered_streak: int = 0


@dataclass(frozen=True)
class NewReply:
    """A reply to store. `status` is `sent` where the channel delivers it with the response
    (web, API) and `queued` where a worker sends it later (SMS); `meta` holds what the sender
    needs (destination, segments)."""

    text: str
    buttons: tuple[Button, ...] = ()
    sender: str = "bot"
    status: str = "sent"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimedInbound:
    """A stored inbound message a worker has taken for processing."""

    message: StoredMessage
    conversation: ConversationInfo
    channel: Channel
    language: str
    payload: str | None
    metadata: dict[str, Any]


# Keeps a column as it is in `complete_turn` (None is a value there: "no protocol running").
KEEP: Any = object()
PRIORITY_RANK = {"normal": 0, "high": 1, "immediate": 2}
# A case staff are working on, or waiting to; handed back and resolved cases are closed.
ACTIVE_CASE = ("open", "claimed")
# A staff reply's vendor id is its staff-tool post's id (redelivered posts are recognised by it)
# until a channel's sender replaces it with the vendor's message id.
STAFF_POST_PREFIX = "staff:"
# The patient's answer to "how did it go?" after staff resolved their case.
FEEDBACK_PAYLOADS = {"/feedback_good": "good", "/feedback_okay": "okay", "/feedback_poor": "poor"}


@dataclass(frozen=True)
class Deadlines:
    """Per priority, in seconds: when a case must be claimed (then supervisors are told), and
    how often on-call staff are reminded until then."""

    claim_s: dict[str, int] = field(
        default_factory=lambda: {"immediate": 300, "high": 900, "normal": 3600}
    )
    renotify_s: dict[str, int] = field(
        default_factory=lambda: {"immediate": 120, "high": 300, "normal": 900}
    )


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _info(conversation: Conversation) -> ConversationInfo:
    return ConversationInfo(
        id=conversation.id,
        patient_id=conversation.patient_id,
        channel=Channel(conversation.channel),
        mode=conversation.mode,
        language=conversation.language,
        safety_level=conversation.safety_level,
        safety_rule_ids=tuple(conversation.safety_rule_ids or ()),
        triage=conversation.triage,
        safety_protocol=conversation.safety_protocol,
        unanswered_streak=conversation.unanswered_streak or 0,
    )


def stored(message: Message) -> StoredMessage:
    return StoredMessage(
        id=message.id,
        seq=message.seq,
        conversation_id=message.conversation_id,
        direction="inbound" if message.direction == "inbound" else "outbound",
        sender=message.sender,
        text=message.text,
        buttons=tuple(Button(**b) for b in message.buttons or ()),
        created_at=message.created_at.isoformat(),
        client_id=(message.meta or {}).get("client_id"),
    )


def _outbound(
    conversation_id: str, channel: Channel, language: str, reply: NewReply, in_reply_to: str | None
) -> Message:
    return Message(
        conversation_id=conversation_id,
        channel=channel.value,
        direction="outbound",
        sender=reply.sender,
        text=reply.text,
        language=language,
        buttons=[{"title": b.title, "payload": b.payload} for b in reply.buttons],
        vendor_ids={},
        meta=dict(reply.meta),
        status=reply.status,
        in_reply_to=in_reply_to,
    )


class ConversationStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def find_conversation(self, *, channel: Channel, address: str) -> ConversationInfo | None:
        """The patient's current conversation, whichever of their verified channels it began on."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(Conversation)
                .join(ChannelIdentity, Conversation.patient_id == ChannelIdentity.patient_id)
                .where(ChannelIdentity.channel == channel.value)
                .where(ChannelIdentity.address_hash == blind_index(address))
                .where(Conversation.merged_into.is_(None))
                .order_by(Conversation.created_at.desc())
                .limit(1)
            )
            return _info(row) if row else None

    async def open_conversation(
        self, *, channel: Channel, address: str, language: str
    ) -> ConversationInfo:
        """The conversation of this sender on this channel, created on first contact."""
        existing = await self.find_conversation(channel=channel, address=address)
        if existing:
            return existing
        try:
            async with self._sessions() as session, session.begin():
                patient = Patient(preferred_language=language)
                identity = ChannelIdentity(patient=patient, channel=channel.value, address=address)
                session.add_all([patient, identity])
                await session.flush()
                conversation = Conversation(
                    id=new_id(),
                    patient_id=patient.id,
                    identity_id=identity.id,
                    channel=channel.value,
                    language=language,
                    safety_rule_ids=[],
                )
                session.add(conversation)
                session.add(
                    AuditEvent(
                        actor=f"channel:{channel.value}",
                        action="conversation.opened",
                        patient_id=patient.id,
                        conversation_id=conversation.id,
                    )
                )
            return _info(conversation)
        except IntegrityError:
            # Two first messages raced; the other one created it.
            found = await self.find_conversation(channel=channel, address=address)
            if found is None:
                raise
            return found

    async def store_inbound(
        self, *, conversation: ConversationInfo, inbound: Inbound, text: str, language: str
    ) -> tuple[StoredMessage, bool]:
        """Store the message; returns (message, duplicate). A redelivered vendor id is not stored
        twice: the first copy comes back with duplicate=True."""
        meta = dict(inbound.metadata)
        if inbound.payload:
            meta["payload"] = inbound.payload
        message = Message(
            conversation_id=conversation.id,
            channel=inbound.channel.value,
            direction="inbound",
            sender="patient",
            text=text,
            language=language,
            buttons=[],
            vendor_message_id=inbound.vendor_message_id,
            vendor_ids=dict(inbound.vendor_ids),
            meta=meta,
            status="received",
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(message)
        except IntegrityError:
            # Redelivery is rare, so the unique constraint detects it instead of a look-up first.
            if inbound.vendor_message_id is None:
                raise
            previous = await self._by_vendor_id(conversation.id, inbound.vendor_message_id)
            if previous is None:
                raise
            return previous, True
        return stored(message), False

    async def claim_inbound(self, message_id: str) -> ClaimedInbound | None:
        """Take a stored inbound message for processing: a redelivered task finds it answered
        and gets None. One still `processing` is taken again: a task is redelivered when its
        worker died (kill -9) halfway, and `complete_turn` keeps a single answer."""
        async with self._sessions() as session, session.begin():
            taken = await session.execute(
                update(Message)
                .where(Message.id == message_id)
                .where(Message.direction == "inbound")
                .where(Message.status.in_(UNANSWERED))
                .values(status="processing")
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
            message = await session.scalar(select(Message).where(Message.id == message_id))
            assert message is not None
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
            meta = dict(message.meta or {})
            return ClaimedInbound(
                message=stored(message),
                conversation=_info(conversation),
                channel=Channel(message.channel),
                language=message.language or conversation.language,
                payload=meta.get("payload"),
                metadata=meta,
            )

    async def message_status(self, message_id: str) -> str | None:
        async with self._sessions() as session:
            return await session.scalar(select(Message.status).where(Message.id == message_id))

    async def set_status(self, message_id: str, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, processed_at=utcnow())
            )

    async def last_offered_buttons(self, conversation_id: str) -> tuple[Button, ...]:
        """The choices of the assistant's latest message, if it offered any: a bare "2" by SMS
        answers them only while they are the last thing the patient was asked."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .where(Message.direction == "outbound")
                .order_by(Message.seq.desc())
                .limit(1)
            )
            return tuple(Button(**b) for b in row.buttons or ()) if row else ()

    async def _by_vendor_id(self, conversation_id: str, vendor_id: str) -> StoredMessage | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .where(Message.vendor_message_id == vendor_id)
            )
            return stored(row) if row else None

    async def complete_turn(
        self,
        *,
        conversation: ConversationInfo,
        inbound_id: str,
        channel: Channel,
        replies: Sequence[NewReply],
        status: str,
        needs_follow_up: bool,
        language: str,
        safety: SafetyAssessment,
        dialogue_ms: float | None = None,
        triage: dict[str, Any] | None = None,
        safety_protocol: Any = KEEP,
        audits: Sequence[tuple[str, dict[str, Any]]] = (),
        unanswered: bool | None = None,
    ) -> list[StoredMessage]:
        """Store the replies to one inbound message, its decisions' audit records and the
        conversation's new state, and close the message's processing, atomically. Raises
        TurnAlreadyCompleted (storing nothing) when another attempt answered it first."""
        now = utcnow()
        messages = [_outbound(conversation.id, channel, language, r, inbound_id) for r in replies]
        async with self._sessions() as session, session.begin():
            session.add_all(messages)
            session.add_all(
                AuditEvent(
                    actor="orchestrator",
                    action=action,
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    detail={"message_id": inbound_id, **detail},
                )
                for action, detail in audits
            )
            closed = await session.execute(
                update(Message)
                .where(Message.id == inbound_id)
                .where(Message.status.in_(UNANSWERED))
                .values(
                    status=status,
                    needs_follow_up=needs_follow_up,
                    processed_at=now,
                    dialogue_ms=dialogue_ms,
                    language=language,
                )
            )
            if closed.rowcount != 1:  # type: ignore[attr-defined]
                raise TurnAlreadyCompleted(inbound_id)
            # Most turns change nothing on the conversation; its activity is in its messages.
            changes: dict[str, Any] = {}
            if language != conversation.language:
                changes["language"] = language
            if needs_follow_up:
                changes["needs_follow_up"] = True
            if safety.level != "none":
                changes["safety_level"] = safety.level
                changes["safety_rule_ids"] = list(safety.rule_ids)
            if triage is not None:
                changes["triage"] = triage
            if safety_protocol is not KEEP:
                changes["safety_protocol"] = safety_protocol
            if unanswered:
                changes["unanswered_streak"] = Conversation.unanswered_streak + 1
            elif unanswered is False and conversation.unanswered_streak:
                changes["unanswered_streak"] = 0
            if changes:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation.id)
                    .values(**changes, updated_at=now)
                )
        return [stored(m) for m in messages]

    async def add_replies(
        self,
        *,
        conversation: ConversationInfo,
        channel: Channel,
        in_reply_to: str | None,
        language: str,
        replies: Sequence[NewReply],
    ) -> list[StoredMessage]:
        """Store messages that are not the dialogue's answer to a turn (keyword confirmations,
        staff replies, reminders)."""
        messages = [_outbound(conversation.id, channel, language, r, in_reply_to) for r in replies]
        async with self._sessions() as session, session.begin():
            session.add_all(messages)
        return [stored(m) for m in messages]

    async def escalate(
        self,
        *,
        conversation: ConversationInfo,
        priority: str,
        reason: str,
        rule_ids: tuple[str, ...] | list[str],
        summary: str | None = None,
        deadlines: Deadlines | None = None,
    ) -> tuple[str, bool]:
        """Open a case for staff, or raise the active one's priority. Returns the case id and
        whether staff need telling (a new case, or a higher priority)."""
        deadlines = deadlines or Deadlines()
        now = utcnow()
        due_at = now + timedelta(seconds=deadlines.claim_s[priority])
        notify_at = now + timedelta(seconds=deadlines.renotify_s[priority])
        async with self._sessions() as session, session.begin():
            case = await session.scalar(
                select(Escalation)
                .where(Escalation.conversation_id == conversation.id)
                .where(Escalation.status.in_(ACTIVE_CASE))
                .order_by(Escalation.created_at.desc())
                .limit(1)
            )
            if case is None:
                case = Escalation(
                    id=new_id(),
                    conversation_id=conversation.id,
                    patient_id=conversation.patient_id,
                    priority=priority,
                    reason=reason,
                    rule_ids=list(rule_ids),
                    summary=summary,
                    status="open",
                    due_at=due_at,
                    next_notify_at=notify_at,
                    notify_count=0,
                )
                session.add(case)
                changed = True
            else:
                changed = PRIORITY_RANK[priority] > PRIORITY_RANK.get(case.priority, 0)
                if changed:
                    case.priority = priority
                    case.reason = reason
                    if case.status == "open":
                        # Graver now: the shorter deadline applies from this moment.
                        case.due_at = min(as_utc(case.due_at or due_at), due_at)
                        case.next_notify_at = notify_at
                case.rule_ids = list(dict.fromkeys([*case.rule_ids, *rule_ids]))
                if summary:
                    case.summary = summary
            session.add(
                AuditEvent(
                    actor="orchestrator",
                    action="escalation.opened" if changed else "escalation.updated",
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    detail={
                        "escalation_id": case.id,
                        "priority": case.priority,
                        "reason": reason,
                        "rule_ids": list(rule_ids),
                    },
                )
            )
            await session.flush()
            return case.id, changed

    async def active_case(self, conversation_id: str) -> str | None:
        async with self._sessions() as session:
            return await session.scalar(
                select(Escalation.id)
                .where(Escalation.conversation_id == conversation_id)
                .where(Escalation.status.in_(ACTIVE_CASE))
                .limit(1)
            )

    async def record_feedback(self, conversation_id: str, payload: str) -> bool:
        """The patient's answer to the feedback question of their latest resolved case."""
        choice = FEEDBACK_PAYLOADS.get(payload)
        if choice is None:
            return False
        async with self._sessions() as session, session.begin():
            case = await session.scalar(
                select(Escalation)
                .where(Escalation.conversation_id == conversation_id)
                .where(Escalation.status == "resolved")
                .where(Escalation.feedback.is_(None))
                .order_by(Escalation.resolved_at.desc())
                .limit(1)
            )
            if case is None:
                return False
            case.feedback = choice
            session.add(
                AuditEvent(
                    actor="patient",
                    action="case.feedback",
                    patient_id=case.patient_id,
                    conversation_id=conversation_id,
                    detail={"escalation_id": case.id, "feedback": choice},
                )
            )
        return True

    async def open_escalations(self, conversation_id: str) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Escalation).where(Escalation.conversation_id == conversation_id)
            )
            return [
                {
                    "id": e.id,
                    "priority": e.priority,
                    "reason": e.reason,
                    "status": e.status,
                    "rule_ids": list(e.rule_ids),
                }
                for e in rows
            ]

    async def replies_to(self, inbound_id: str) -> list[StoredMessage]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Message).where(Message.in_reply_to == inbound_id).order_by(Message.seq)
            )
            return [stored(m) for m in rows]

    async def history(self, conversation_id: str, *, limit: int) -> list[StoredMessage]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.seq.desc())
                .limit(limit)
            )
            return [stored(m) for m in reversed(list(rows))]

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        async with self._sessions() as session:
            row = await session.get(Conversation, conversation_id)
            return _info(row) if row else None

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        conversation: ConversationInfo | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                AuditEvent(
                    actor=actor,
                    action=action,
                    patient_id=conversation.patient_id if conversation else None,
                    conversation_id=conversation.id if conversation else None,
                    detail=detail or {},
                )
            )

    async def count_messages(self, conversation_id: str) -> int:
        async with self._sessions() as session:
            total = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.conversation_id == conversation_id)
            )
            return int(total or 0)
