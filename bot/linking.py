"""One patient across channels: a web chat patient links a phone by proving they hold it.

A six-digit code goes to the phone by SMS; only its HMAC is stored, it expires
(`PHONE_CODE_TTL_S`), sending is rate-limited per number and per patient
(`PHONE_CODES_PER_HOUR`), and a code is locked after `PHONE_CODE_MAX_ATTEMPTS` wrong tries.
Nothing is merged on what a patient merely claims: the phone joins the patient only once the
code comes back. From then on a text from that phone continues the same conversation (its
triage, its open case, Rasa's state), because conversations are found through the patient.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import phonenumbers
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store import ConversationInfo
from core.crypto import blind_index
from core.orm import AuditEvent, ChannelIdentity, Conversation, PhoneLinkCode, SmsConsent, utcnow

log = logging.getLogger(__name__)

# (E.164 number, text) -> sends it now; raises CodeNotSent.
CodeSender = Callable[[str, str], Awaitable[None]]
CodeText = Callable[[str, str, int], str]  # (code, language, minutes) -> message text


class LinkError(Exception):
    """`code` is stable for clients; `attempts_left` only for a wrong code."""

    def __init__(self, code: str, attempts_left: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.attempts_left = attempts_left


class CodeNotSent(Exception):
    def __init__(self, opted_out: bool = False) -> None:
        super().__init__("code not sent")
        self.opted_out = opted_out


@dataclass(frozen=True)
class LinkPolicy:
    ttl_s: int = 600
    max_attempts: int = 5
    codes_per_hour: int = 3
    region: str = "US"


def masked(number: str) -> str:
    return f"•••• {number[-4:]}"


def normalize_phone(raw: str, region: str) -> str | None:
    """E.164 for a mobile-capable number a patient typed in any usual format, else None."""
    try:
        parsed = phonenumbers.parse(raw.strip()[:40], region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    kind = phonenumbers.number_type(parsed)
    if kind not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class PhoneLinking:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        secret: bytes,
        policy: LinkPolicy,
        send: CodeSender,
        text: CodeText,
    ) -> None:
        self._sessions = sessions
        self._secret = secret
        self._policy = policy
        self._send = send
        self._text = text

    @property
    def code_ttl_s(self) -> int:
        return self._policy.ttl_s

    def _hash(self, code_id: str, code: str) -> str:
        return hmac.new(self._secret, f"{code_id}:{code}".encode(), hashlib.sha256).hexdigest()

    async def linked_phone(self, patient_id: str) -> str | None:
        async with self._sessions() as session:
            address = await session.scalar(
                select(ChannelIdentity.address)
                .where(ChannelIdentity.patient_id == patient_id)
                .where(ChannelIdentity.channel == "sms")
                .order_by(ChannelIdentity.created_at.desc())
                .limit(1)
            )
        return masked(address) if address else None

    async def start(self, conversation: ConversationInfo, raw_phone: str, language: str) -> str:
        """Send a code to the phone; returns the masked number."""
        address = normalize_phone(raw_phone, self._policy.region)
        if address is None:
            raise LinkError("invalid_phone")
        now = utcnow()
        hour_ago = now - timedelta(hours=1)
        async with self._sessions() as session, session.begin():
            recent_to_number = await session.scalar(
                select(func.count())
                .select_from(PhoneLinkCode)
                .where(PhoneLinkCode.address_hash == blind_index(address))
                .where(PhoneLinkCode.created_at > hour_ago)
            )
            recent_by_patient = await session.scalar(
                select(func.count())
                .select_from(PhoneLinkCode)
                .where(PhoneLinkCode.patient_id == conversation.patient_id)
                .where(PhoneLinkCode.created_at > hour_ago)
            )
            limit = self._policy.codes_per_hour
            # Per number: nobody floods a stranger's phone; per patient: nobody walks a list.
            if (recent_to_number or 0) >= limit or (recent_by_patient or 0) >= 2 * limit:
                raise LinkError("rate_limited")
            consent = await session.scalar(
                select(SmsConsent.status).where(SmsConsent.address_hash == blind_index(address))
            )
            if consent == "opted_out":
                raise LinkError("opted_out")
            await session.execute(
                update(PhoneLinkCode)
                .where(PhoneLinkCode.patient_id == conversation.patient_id)
                .where(PhoneLinkCode.status == "pending")
                .values(status="replaced")
            )
            code = f"{secrets.randbelow(10**6):06d}"
            row = PhoneLinkCode(
                patient_id=conversation.patient_id,
                conversation_id=conversation.id,
                address=address,
                code_hash="",
                attempts=0,
                status="pending",
                created_at=now,
                expires_at=now + timedelta(seconds=self._policy.ttl_s),
            )
            session.add(row)
            await session.flush()
            row.code_hash = self._hash(row.id, code)
            code_id = row.id
        try:
            await self._send(address, self._text(code, language, max(1, self._policy.ttl_s // 60)))
        except CodeNotSent as exc:
            await self._set_status(code_id, "replaced")
            raise LinkError("opted_out" if exc.opted_out else "sms_unavailable") from None
        await self._audit(conversation, "identity.link_code_sent", {"code_id": code_id})
        return masked(address)

    async def verify(self, conversation: ConversationInfo, code: str) -> str:
        """Check the code; on success the phone belongs to this patient. Returns it masked."""
        code = "".join(ch for ch in code if ch.isdigit())
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(PhoneLinkCode)
                .where(PhoneLinkCode.patient_id == conversation.patient_id)
                .where(PhoneLinkCode.status == "pending")
                .order_by(PhoneLinkCode.created_at.desc())
                .limit(1)
            )
            if row is None:
                raise LinkError("no_pending_code")
            if row.expires_at.replace(tzinfo=utcnow().tzinfo) <= utcnow():
                row.status = "expired"
                outcome = LinkError("expired")
            elif not hmac.compare_digest(row.code_hash, self._hash(row.id, code)):
                row.attempts += 1
                left = self._policy.max_attempts - row.attempts
                if left <= 0:
                    row.status = "locked"
                    outcome = LinkError("locked")
                else:
                    outcome = LinkError("invalid_code", attempts_left=left)
            else:
                row.status = "used"
                address = row.address
                await self._link(session, conversation, address)
                outcome = None
        if outcome is not None:
            await self._audit(conversation, f"identity.link_{outcome.code}", {})
            raise outcome
        return masked(address)

    async def _link(
        self, session: AsyncSession, conversation: ConversationInfo, address: str
    ) -> None:
        identity = await session.scalar(
            select(ChannelIdentity)
            .where(ChannelIdentity.channel == "sms")
            .where(ChannelIdentity.address_hash == blind_index(address))
        )
        detail: dict[str, object] = {}
        if identity is None:
            session.add(
                ChannelIdentity(patient_id=conversation.patient_id, channel="sms", address=address)
            )
        elif identity.patient_id != conversation.patient_id:
            # The phone had texted before as a patient of its own: its conversations stay as
            # they were, for the record, and the story goes on in this one.
            merged = await session.execute(
                update(Conversation)
                .where(Conversation.identity_id == identity.id)
                .where(Conversation.merged_into.is_(None))
                .values(merged_into=conversation.id)
            )
            detail = {
                "previous_patient_id": identity.patient_id,
                "conversations_merged": merged.rowcount,  # type: ignore[attr-defined]
            }
            identity.patient_id = conversation.patient_id
        session.add(
            AuditEvent(
                actor="patient:web",
                action="identity.linked",
                patient_id=conversation.patient_id,
                conversation_id=conversation.id,
                detail={"channel": "sms", **detail},
            )
        )

    async def _set_status(self, code_id: str, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(PhoneLinkCode).where(PhoneLinkCode.id == code_id).values(status=status)
            )

    async def _audit(
        self, conversation: ConversationInfo, action: str, detail: dict[str, object]
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                AuditEvent(
                    actor="patient:web",
                    action=action,
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    detail=detail,
                )
            )
