"""Cases for clinic staff: the one service every staff action goes through, whether it comes
from Mattermost (buttons, slash commands, posts in a case channel) or from the admin console.

A case opens when the bot should not handle a conversation alone (the orchestrator calls
`ConversationStore.escalate`). Staff then claim it (the conversation's mode becomes `staff`:
the bot goes quiet, the safety layer still reads every patient message), answer the patient on
the channel the patient last used, hand the conversation back to the bot (which resumes with a
short summary of what staff said), and resolve it (the patient is asked for optional feedback).
Every staff action is audited with who did it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.contract import Button, Channel, Outbound, StoredMessage
from bot.orchestrator import ReplyDelivery
from bot.phrases import phrase
from bot.store import (
    ACTIVE_CASE,
    FEEDBACK_PAYLOADS,
    PRIORITY_RANK,
    STAFF_POST_PREFIX,
    NewReply,
    as_utc,
    stored,
)
from core import metrics
from core.crypto import blind_index
from core.orm import (
    AuditEvent,
    ChannelIdentity,
    Conversation,
    Escalation,
    Message,
    SmsConsent,
    utcnow,
)
from escalation.card import clinician_summary, patient_summary

log = logging.getLogger(__name__)

Delivery = Literal["sent", "queued", "not_sent", "duplicate"]
# (conversation id, messages): shows staff messages live on the patient's open web pages.
LivePush = Callable[[str, Sequence[StoredMessage]], Awaitable[None]]
# (case id, event, detail): tells the staff tool (Mattermost) that a case changed.
CaseEventHook = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class CaseError(Exception):
    """A staff action that cannot be done; `code` is stable, `message` is for staff."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Staff:
    """Who acts. `id` is "mattermost:<user id>" or "console:<name>"; `name` is for staff and the
    audit log; `shown_as` is what the patient sees, per the clinic's STAFF_DISPLAY policy."""

    id: str
    name: str
    shown_as: str


def shown_as(policy: str, *, first_name: str, role: str, clinic: str) -> str:
    first, role = first_name.strip(), role.strip()
    if policy == "clinic" or (policy == "role" and not role) or not (first or role):
        return f"{clinic} staff" if policy != "clinic" or clinic else "Clinic staff"
    if policy == "role":
        return role
    return f"{first} ({role})" if first and role else first or role


@dataclass(frozen=True)
class CaseView:
    id: str
    conversation_id: str
    patient_id: str
    priority: str
    reason: str
    status: str
    channel: str
    language: str
    created_at: datetime
    due_at: datetime | None
    claimed_by: str | None
    claimed_by_id: str | None
    claimed_at: datetime | None
    triage: dict[str, Any] | None
    summary: str | None
    rule_ids: tuple[str, ...]
    staff_channel_id: str | None
    staff_card_id: str | None
    notify_count: int
    supervisor_notified: bool
    callback_requested: bool
    feedback: str | None
    safety_level: str

    @property
    def overdue(self) -> bool:
        return self.status == "open" and self.due_at is not None and utcnow() > as_utc(self.due_at)

    def as_dict(self) -> dict[str, Any]:
        triage = self.triage or None
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "priority": self.priority,
            "reason": self.reason,
            "status": self.status,
            "channel": self.channel,
            "language": self.language,
            "created_at": as_utc(self.created_at).isoformat(),
            "due_at": as_utc(self.due_at).isoformat() if self.due_at else None,
            "overdue": self.overdue,
            "claimed_by": self.claimed_by,
            "claimed_at": as_utc(self.claimed_at).isoformat() if self.claimed_at else None,
            "triage": (
                {
                    "disposition": triage.get("disposition"),
                    "reasons": list(triage.get("reasons", [])),
                }
                if triage
                else None
            ),
            "summary_patient": patient_summary(self),
            "summary_clinician": clinician_summary(self),
            "rule_ids": list(self.rule_ids),
            "callback_requested": self.callback_requested,
            "feedback": self.feedback,
        }


@dataclass(frozen=True)
class ReplyOutcome:
    message: StoredMessage | None
    delivery: Delivery
    notice: str | None = None


@dataclass(frozen=True)
class CaseConfig:
    clinic_name: str = "the clinic"
    sms_enabled: bool = False


@dataclass
class _Route:
    """Where a staff message for this patient goes."""

    channel: Channel
    address: str | None
    language: str
    not_sent: str | None = None
    callback: bool = False
    extra_audit: dict[str, Any] = field(default_factory=dict)


def case_view(case: Escalation, conversation: Conversation) -> CaseView:
    return CaseView(
        id=case.id,
        conversation_id=case.conversation_id,
        patient_id=case.patient_id,
        priority=case.priority,
        reason=case.reason,
        status=case.status,
        channel=conversation.channel,
        language=conversation.language,
        created_at=case.created_at,
        due_at=case.due_at,
        claimed_by=case.claimed_by_name,
        claimed_by_id=case.claimed_by_id,
        claimed_at=case.claimed_at,
        triage=conversation.triage,
        summary=case.summary,
        rule_ids=tuple(case.rule_ids or ()),
        staff_channel_id=case.staff_channel_id,
        staff_card_id=case.staff_card_id,
        notify_count=case.notify_count or 0,
        supervisor_notified=case.supervisor_notified_at is not None,
        callback_requested=bool(case.callback_requested),
        feedback=case.feedback,
        safety_level=conversation.safety_level,
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def handback_summary(staff_texts: Sequence[str], *, limit: int = 280) -> str:
    """What staff said, short: their last two messages, or only the first sentence of each
    when that is too long."""
    recent = [" ".join(t.split()) for t in staff_texts if t.strip()][-2:]
    summary = " ".join(recent)
    if len(summary) > limit:
        summary = " ".join(_SENTENCE_END.split(t, maxsplit=1)[0] for t in recent)
    return summary if len(summary) <= limit else summary[: limit - 1].rstrip() + "…"


class CaseService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        config: CaseConfig,
        enqueue: Callable[..., Awaitable[None]],
        fitters: dict[Channel, ReplyDelivery],
        sms_send_task: str,
        live: LivePush | None = None,
        on_case_event: CaseEventHook | None = None,
        interrupt_dialogue: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._enqueue = enqueue
        self._fitters = fitters
        self._sms_send_task = sms_send_task
        self.live = live
        # Set by the app when phone calls are on: a claim while the patient is on the phone
        # transfers the call to the staff line (True when it did).
        self.on_call_claimed: Callable[[str, str], Awaitable[bool]] | None = None
        self._on_case_event = on_case_event
        self._interrupt = interrupt_dialogue

    # -- reading ---------------------------------------------------------------------------

    async def list_cases(self, *, active_only: bool = True, limit: int = 200) -> list[CaseView]:
        async with self._sessions() as session:
            query = select(Escalation, Conversation).join(
                Conversation, Conversation.id == Escalation.conversation_id
            )
            if active_only:
                query = query.where(Escalation.status.in_(ACTIVE_CASE))
            rows = (
                await session.execute(query.order_by(Escalation.created_at.desc()).limit(limit))
            ).all()
        views = [case_view(case, conversation) for case, conversation in rows]
        # Waiting cases first, most urgent first, oldest first within a priority.
        views.sort(
            key=lambda v: (
                v.status not in ACTIVE_CASE,
                v.status != "open",
                -PRIORITY_RANK.get(v.priority, -1),
                as_utc(v.created_at),
            )
        )
        return views

    async def get(self, case_id: str) -> CaseView:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(Escalation, Conversation)
                    .join(Conversation, Conversation.id == Escalation.conversation_id)
                    .where(Escalation.id == case_id)
                )
            ).first()
        if row is None:
            raise CaseError("not_found", "No such case.")
        return case_view(*row)

    async def by_staff_channel(self, channel_id: str) -> CaseView | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(Escalation, Conversation)
                    .join(Conversation, Conversation.id == Escalation.conversation_id)
                    .where(Escalation.staff_channel_id == channel_id)
                )
            ).first()
        return case_view(*row) if row else None

    async def transcript(
        self, case_id: str, *, staff: Staff, limit: int = 200
    ) -> tuple[CaseView, list[dict[str, Any]]]:
        case = await self.get(case_id)
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == case.conversation_id)
                    .order_by(Message.seq.desc())
                    .limit(limit)
                )
            )
            session.add(self._audit(staff, "case.transcript_read", case, {"messages": len(rows)}))
            await session.commit()
        messages = [
            {**stored(m).as_dict(), "status": m.status, "channel": m.channel}
            for m in reversed(rows)
        ]
        return case, messages

    # -- staff actions ---------------------------------------------------------------------

    async def claim(self, case_id: str, staff: Staff) -> CaseView:
        async with self._sessions() as session, session.begin():
            case = await self._locked(session, case_id)
            if case.status == "claimed" and case.claimed_by_id == staff.id:
                return case_view(case, await self._conversation(session, case))
            if case.status == "claimed":
                raise CaseError("claimed", f"{case.claimed_by_name} has already claimed this case.")
            if case.status not in ACTIVE_CASE:
                raise CaseError("closed", "This case is closed.")
            # Only one claim wins when two staff press Claim at the same moment.
            won = await session.execute(
                update(Escalation)
                .where(Escalation.id == case_id)
                .where(Escalation.status == "open")
                .values(
                    status="claimed",
                    claimed_by_id=staff.id,
                    claimed_by_name=staff.name,
                    claimed_at=utcnow(),
                    next_notify_at=None,
                )
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                raise CaseError("claimed", "Someone else claimed this case a moment ago.")
            in_time = case.due_at is None or utcnow() <= as_utc(case.due_at)
            await session.execute(
                update(Conversation)
                .where(Conversation.id == case.conversation_id)
                .values(mode="staff", updated_at=utcnow())
            )
            session.add(self._audit(staff, "case.claimed", case, {"shown_as": staff.shown_as}))
        metrics.ESCALATIONS_CLAIMED.labels(case.priority, str(in_time).lower()).inc()
        if self._interrupt:
            # A triage form half asked would otherwise resume on the patient's next message.
            try:
                await self._interrupt(case.conversation_id)
            except Exception:
                log.warning("could not stop the dialogue's form", exc_info=True)
        view = await self.get(case_id)
        transferred = False
        if self.on_call_claimed is not None:
            try:
                transferred = await self.on_call_claimed(view.conversation_id, staff.shown_as)
            except Exception:
                log.warning("could not transfer the patient's call to staff", exc_info=True)
        if not transferred:
            await self._tell_patient(
                view,
                phrase(
                    "staff_joined",
                    view.language,
                    staff=staff.shown_as,
                    clinic=self._config.clinic_name,
                ),
                sender="system",
            )
        await self._event(view, "claimed", {"by": staff.name})
        return view

    async def reply(
        self,
        case_id: str,
        staff: Staff,
        text: str,
        *,
        post_id: str | None = None,
        links: Sequence[str] = (),
    ) -> ReplyOutcome:
        """Send a staff member's message to the patient on the channel the patient last used.
        `post_id` (the staff tool's id of the post) makes a redelivered post a no-op."""
        body = text.strip()
        if links:
            body = "\n".join([body, *links]).strip()
        if not body:
            raise CaseError("empty", "Write a message first.")
        if len(body) > 4000:
            raise CaseError("too_long", "That message is too long (4,000 characters at most).")
        case = await self.get(case_id)
        vendor_id = f"{STAFF_POST_PREFIX}{post_id}" if post_id else None
        # Seen before (a redelivery, a catch-up after a restart): whatever the case is now.
        if vendor_id and (existing := await self._by_vendor_id(case, vendor_id)):
            return ReplyOutcome(existing, "duplicate")
        if case.status != "claimed":
            raise CaseError(
                "not_claimed" if case.status == "open" else "closed",
                "Claim the case first: nothing was sent to the patient."
                if case.status == "open"
                else "This case is closed: nothing was sent to the patient.",
            )
        if case.claimed_by_id != staff.id:
            raise CaseError(
                "claimed",
                f"{case.claimed_by} has this case: your message was not sent to the patient.",
            )
        route = await self._route(case)
        outcome = await self._send(
            case,
            route,
            f"{staff.shown_as}: {body}",
            sender="staff",
            vendor_id=vendor_id,
            meta={"staff_id": staff.id, "staff_shown_as": staff.shown_as},
        )
        await self._audit_now(
            staff,
            "case.staff_replied",
            case,
            {
                "message_id": outcome.message.id if outcome.message else None,
                "delivery": outcome.delivery,
                "channel": route.channel.value,
                "post_id": post_id,
                **route.extra_audit,
            },
        )
        if outcome.delivery == "not_sent" and outcome.notice:
            await self._event(case, "not_sent", {"notice": outcome.notice})
        elif post_id is None and outcome.delivery in ("sent", "queued"):
            # Written in the console: colleagues following the case in Mattermost see it too.
            await self._event(case, "console_reply", {"by": staff.name, "text": body[:1000]})
        return outcome

    async def hand_back(self, case_id: str, staff: Staff) -> CaseView:
        async with self._sessions() as session, session.begin():
            case = await self._locked(session, case_id)
            if case.status not in ACTIVE_CASE:
                raise CaseError("closed", "This case is closed.")
            if case.status == "claimed" and case.claimed_by_id != staff.id:
                # Only the person talking with the patient knows the talk is done; a
                # supervisor who must step in resolves the case instead (audited).
                raise CaseError(
                    "claimed", f"{case.claimed_by_name} has this case: only they can hand it back."
                )
            claimed_at = case.claimed_at
            case.status = "handed_back"
            case.handed_back_at = utcnow()
            case.next_notify_at = None
            await session.execute(
                update(Conversation)
                .where(Conversation.id == case.conversation_id)
                .values(mode="bot", unanswered_streak=0, updated_at=utcnow())
            )
            session.add(self._audit(staff, "case.handed_back", case, {}))
            staff_texts = await self._staff_texts(session, case, claimed_at)
        view = await self.get(case_id)
        if staff_texts:
            message = phrase(
                "staff_handback",
                view.language,
                staff=staff.shown_as,
                summary=handback_summary(staff_texts),
            )
        else:
            message = phrase("staff_handback_nothing", view.language)
        await self._tell_patient(view, message, sender="system")
        await self._event(view, "handed_back", {"by": staff.name})
        return view

    async def resolve(self, case_id: str, staff: Staff) -> CaseView:
        async with self._sessions() as session, session.begin():
            case = await self._locked(session, case_id)
            if case.status == "resolved":
                raise CaseError("closed", "This case is already resolved.")
            was_with_staff = case.status == "claimed"
            case.status = "resolved"
            case.resolved_at = utcnow()
            case.resolved_by = staff.name
            case.next_notify_at = None
            if was_with_staff:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == case.conversation_id)
                    .values(mode="bot", unanswered_streak=0, updated_at=utcnow())
                )
            session.add(self._audit(staff, "case.resolved", case, {}))
        view = await self.get(case_id)
        language = view.language
        buttons = tuple(
            Button(phrase(f"feedback_{choice}", language), payload)
            for payload, choice in FEEDBACK_PAYLOADS.items()
        )
        await self._tell_patient(
            view, phrase("case_resolved_feedback", language), sender="system", buttons=buttons
        )
        await self._event(view, "resolved", {"by": staff.name})
        return view

    # -- internals -------------------------------------------------------------------------

    async def _locked(self, session: AsyncSession, case_id: str) -> Escalation:
        case = await session.scalar(
            select(Escalation).where(Escalation.id == case_id).with_for_update()
        )
        if case is None:
            raise CaseError("not_found", "No such case.")
        return case

    async def _conversation(self, session: AsyncSession, case: Escalation) -> Conversation:
        conversation = await session.get(Conversation, case.conversation_id)
        assert conversation is not None
        return conversation

    async def _staff_texts(
        self, session: AsyncSession, case: Escalation, since: datetime | None
    ) -> list[str]:
        query = (
            select(Message.meta, Message.text)
            .where(Message.conversation_id == case.conversation_id)
            .where(Message.sender == "staff")
            .order_by(Message.seq)
        )
        if since is not None:
            query = query.where(Message.created_at >= since)
        texts = []
        for meta, text in (await session.execute(query)).all():
            prefix = f"{(meta or {}).get('staff_shown_as', '')}: "
            # SMS parts after the first carry no prefix; only the first has it to strip.
            texts.append(text[len(prefix) :] if text.startswith(prefix) else text)
        return texts

    async def _by_vendor_id(self, case: CaseView, vendor_id: str) -> StoredMessage | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(Message)
                .where(Message.conversation_id == case.conversation_id)
                .where(Message.vendor_message_id == vendor_id)
            )
        return stored(row) if row else None

    async def _route(self, case: CaseView) -> _Route:
        """The patient's channel for a staff message: where they last wrote from."""
        async with self._sessions() as session:
            last = await session.scalar(
                select(Message.channel)
                .where(Message.conversation_id == case.conversation_id)
                .where(Message.direction == "inbound")
                .order_by(Message.seq.desc())
                .limit(1)
            )
            channel = Channel(last or case.channel)
            if channel in (Channel.WEB, Channel.API):
                return _Route(channel, None, case.language)
            # A call has ended by the time staff write: a text follows it up, when we may.
            phone = await session.scalar(
                select(ChannelIdentity.address)
                .where(ChannelIdentity.patient_id == case.patient_id)
                .where(ChannelIdentity.channel.in_([Channel.SMS.value, Channel.VOICE.value]))
                .order_by((ChannelIdentity.channel == channel.value).desc())
                .limit(1)
            )
            consent = (
                await session.scalar(
                    select(SmsConsent.status).where(SmsConsent.address_hash == blind_index(phone))
                )
                if phone
                else None
            )
        extra = {"from_channel": channel.value} if channel != Channel.SMS else {}
        if not phone or not self._config.sms_enabled:
            if channel == Channel.VOICE:
                return _Route(
                    Channel.VOICE,
                    phone,
                    case.language,
                    not_sent="The call has ended and texting is not set up: a callback to the "
                    "patient was requested instead.",
                    callback=True,
                    extra_audit=extra,
                )
            return _Route(
                Channel.SMS,
                phone,
                case.language,
                not_sent="SMS is not configured on this server: nothing was sent.",
                extra_audit=extra,
            )
        if consent == "opted_out":
            return _Route(
                Channel.SMS,
                phone,
                case.language,
                not_sent="Not sent: the patient opted out of text messages (replied STOP). "
                "Call them, or ask them to text START.",
                callback=channel == Channel.VOICE,
                extra_audit=extra,
            )
        return _Route(Channel.SMS, phone, case.language, extra_audit=extra)

    async def _send(
        self,
        case: CaseView,
        route: _Route,
        text: str,
        *,
        sender: str,
        vendor_id: str | None = None,
        meta: dict[str, Any] | None = None,
        buttons: tuple[Button, ...] = (),
    ) -> ReplyOutcome:
        outbound = Outbound(
            conversation_id=case.conversation_id,
            channel=route.channel,
            text=text,
            buttons=buttons,
            language=route.language,
            sender="staff" if sender == "staff" else "system",
        )
        fitter = self._fitters.get(route.channel)
        if route.not_sent is not None:
            replies = [
                NewReply(text, buttons, sender, "not_sent", {"reason": route.not_sent[:200]})
            ]
        elif fitter is not None and route.address:
            replies = fitter(outbound, route.address)
        else:
            replies = [NewReply(text, buttons, sender, "sent")]
        messages = [
            Message(
                conversation_id=case.conversation_id,
                channel=route.channel.value,
                direction="outbound",
                sender=sender,
                text=reply.text,
                language=route.language,
                buttons=[{"title": b.title, "payload": b.payload} for b in reply.buttons],
                vendor_message_id=vendor_id if index == 0 else None,
                vendor_ids={},
                meta={**reply.meta, **(meta or {})},
                status=reply.status,
            )
            for index, reply in enumerate(replies)
        ]
        try:
            async with self._sessions() as session, session.begin():
                session.add_all(messages)
                if route.callback:
                    await session.execute(
                        update(Escalation)
                        .where(Escalation.id == case.id)
                        .values(callback_requested=True)
                    )
        except IntegrityError:
            # The same staff post arrived twice at once (two listeners, or a webhook and the
            # websocket): the first one stored it and delivers it.
            if vendor_id and (existing := await self._by_vendor_id(case, vendor_id)):
                return ReplyOutcome(existing, "duplicate")
            raise
        saved = [stored(m) for m in messages]
        if route.not_sent is None:
            metrics.count_message(route.channel.value, "out", len(messages))
        if route.not_sent is not None:
            return ReplyOutcome(saved[0], "not_sent", route.not_sent)
        if messages[0].status == "queued":
            await self._enqueue(self._sms_send_task, [m.id for m in messages])
            return ReplyOutcome(saved[0], "queued")
        if self.live and route.channel == Channel.WEB:
            try:
                await self.live(case.conversation_id, saved)
            except Exception:
                # Stored: the page shows it on its next connect even if the push failed.
                log.warning("could not push a staff message to the web page", exc_info=True)
        return ReplyOutcome(saved[0], "sent")

    async def _tell_patient(
        self, case: CaseView, text: str, *, sender: str, buttons: tuple[Button, ...] = ()
    ) -> None:
        route = await self._route(case)
        if route.not_sent is not None:
            # A system notice that cannot reach the patient is not worth a callback request.
            return
        route = replace(route, callback=False)
        await self._send(case, route, text, sender=sender, buttons=buttons)

    async def _event(self, case: CaseView, event: str, detail: dict[str, Any]) -> None:
        if self._on_case_event is None:
            return
        try:
            await self._on_case_event(case.id, event, detail)
        except Exception:
            # The change is stored and visible in the console; the staff tool catches up later.
            log.exception("could not queue the staff-tool update", extra={"case_id": case.id})

    def _audit(
        self,
        staff: Staff,
        action: str,
        case: Escalation | CaseView,
        detail: dict[str, Any],
    ) -> AuditEvent:
        return AuditEvent(
            actor=f"staff:{staff.id}"[:64],
            action=action,
            patient_id=case.patient_id,
            conversation_id=case.conversation_id,
            detail={"escalation_id": case.id, "staff_name": staff.name, **detail},
        )

    async def _audit_now(
        self, staff: Staff, action: str, case: CaseView, detail: dict[str, Any]
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(self._audit(staff, action, case, detail))
