"""Twilio's Messaging webhooks: incoming messages and delivery status callbacks.

Every request must carry a valid `X-Twilio-Signature` for the URL Twilio called
(`PUBLIC_BASE_URL` + path), else 403. An incoming message is stored and acknowledged at once
with empty TwiML; a worker answers it (channels/sms/tasks.py). Twilio retries a webhook that
times out; the MessageSid makes the retry a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import phonenumbers
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.contract import Channel, Inbound, Outbound
from bot.orchestrator import InvalidMessage, Orchestrator
from bot.phrases import phrase
from bot.store import ConversationStore
from channels.sms import records
from channels.sms.delivery import sms_delivery
from channels.sms.keywords import classify, keyword_set
from channels.sms.twilio_api import STATUS_PATH, WEBHOOK_PATH
from channels.sms.twilio_api import signed_form as twilio_form
from core.orm import AuditEvent
from core.settings import Settings

log = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
PROCESS_INBOUND = "sms.process_inbound"
SEND = "sms.send"
MAX_MEDIA = 10  # Twilio delivers at most 10 media items per message


def e164(number: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


def _refuse(status: int, reason: str) -> Response:
    return Response(reason, status_code=status, media_type="text/plain")


def build_router(
    *,
    settings: Settings,
    orchestrator: Orchestrator,
    store: ConversationStore,
    engine: AsyncEngine,
    enqueue: Any,
) -> APIRouter:
    router = APIRouter(prefix="/channels/sms", tags=["sms channel"], include_in_schema=False)
    keywords = keyword_set(
        settings.sms_extra_opt_out_keywords,
        settings.sms_extra_opt_in_keywords,
        settings.sms_extra_help_keywords,
    )
    standard = keyword_set()

    async def signed_form(request: Request, path: str) -> dict[str, str] | Response:
        return await twilio_form(request, settings, path, enabled=settings.sms_enabled, what="SMS")

    @router.post("/twilio")
    async def incoming(request: Request) -> Response:
        params = await signed_form(request, WEBHOOK_PATH)
        if isinstance(params, Response):
            return params
        message_sid = params.get("MessageSid") or params.get("SmsSid") or ""
        sender = e164(params.get("From", ""), settings.default_phone_region)
        if not message_sid or sender is None:
            log.warning("ignored an SMS webhook without a MessageSid or a phone number")
            return _twiml()
        body = params.get("Body", "")
        keyword = classify(body, keywords)
        if keyword == "opt_in" and not await _opted_out(sender):
            # "YES" or "START" from a number that never said STOP is an ordinary message
            # (an answer to a question, a first hello).
            keyword = None
        inbound = Inbound(
            channel=Channel.SMS,
            sender_address=sender,
            text=body,
            vendor_message_id=message_sid,
            vendor_ids={"message_sid": message_sid},
            metadata=_metadata(params, keyword, sender),
        )
        try:
            accepted = await orchestrator.accept(inbound, refuse_over_rate=False, deferred=True)
        except InvalidMessage as exc:
            # Blank (no text, no picture): nothing to store or answer.
            log.info("ignored an SMS message", extra={"reason": exc.code})
            return _twiml()
        # Twilio retried: queue it again only if the first attempt never got queued.
        if accepted.duplicate and await store.message_status(accepted.message.id) != "received":
            return _twiml()
        if keyword is not None:
            await _keyword(accepted, keyword, body, standard_word=classify(body, standard))
            return _twiml()
        try:
            # Only the id travels through the broker; the number stays in the database.
            await enqueue(PROCESS_INBOUND, accepted.message.id)
        except Exception:
            # Stored as `received`; the worker picks such messages up when it starts.
            log.exception("could not queue an SMS message for processing")
        return _twiml()

    async def _opted_out(address: str) -> bool:
        async with engine.connect() as connection:
            status = await connection.scalar(records.opted_out_query(address))
        return bool(status == "opted_out")

    async def _keyword(accepted: Any, kind: str, body: str, *, standard_word: str | None) -> None:
        """STOP/START/HELP: recorded in our database and answered here, never by the dialogue."""
        conversation, address = accepted.conversation, accepted.sender_address
        # A word only the extra (Spanish) lists have says the language; a standard one does not.
        language = accepted.language
        if standard_word is None and settings.sms_extra_keywords_language in (
            settings.supported_languages
        ):
            language = settings.sms_extra_keywords_language
        async with engine.begin() as connection:
            if kind in ("opt_out", "opt_in"):
                await connection.run_sync(
                    records.record_consent,
                    address=address,
                    status="opted_out" if kind == "opt_out" else "opted_in",
                    keyword=body.strip().upper()[:32],
                    source="keyword",
                    message_id=accepted.message.id,
                )
            await connection.execute(
                insert(AuditEvent).values(
                    actor="patient:sms",
                    action=f"sms.{kind}",
                    patient_id=conversation.patient_id,
                    conversation_id=conversation.id,
                    detail={"message_id": accepted.message.id},
                )
            )
        await store.set_status(accepted.message.id, "keyword")
        # Twilio answers its standard English words itself unless told otherwise; words it
        # does not know (the Spanish ones) only we can confirm.
        if standard_word is not None and not settings.sms_reply_to_standard_keywords:
            return
        key = {"opt_out": "sms_opted_out", "opt_in": "sms_opted_in", "help": "sms_help"}[kind]
        text = phrase(
            key,
            language,
            clinic=settings.clinic_name,
            emergency_number=settings.emergency_number,
        )
        confirmation = Outbound(
            conversation_id=conversation.id,
            channel=Channel.SMS,
            text=text,
            language=language,
            sender="system",
            kind="system",
        )
        # The one message a number that just opted out still gets: the confirmation.
        replies = [
            replace(r, meta={**r.meta, "consent_exempt": kind == "opt_out"})
            for r in sms_delivery(confirmation, address)
        ]
        stored = await store.add_replies(
            conversation=conversation,
            channel=Channel.SMS,
            in_reply_to=accepted.message.id,
            language=language,
            replies=replies,
        )
        try:
            await enqueue(SEND, [m.id for m in stored])
        except Exception:
            log.exception("could not queue a keyword reply")

    @router.post("/twilio/status")
    async def status_callback(request: Request) -> Response:
        params = await signed_form(request, STATUS_PATH)
        if isinstance(params, Response):
            return params
        vendor_id = params.get("MessageSid") or params.get("SmsSid")
        status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
        if not vendor_id or status not in records.STATUS_RANK:
            log.warning("ignored a delivery report without a message id or a known status")
            return _twiml()
        async with engine.begin() as connection:
            await records.record_delivery_report(
                connection,
                vendor_id=vendor_id[:64],
                status=status,
                error_code=(params.get("ErrorCode") or None),
            )
        return _twiml()

    return router


def _metadata(params: dict[str, str], keyword: str | None, sender: str) -> dict[str, Any]:
    media = []
    try:
        count = min(int(params.get("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    for index in range(count):
        url = params.get(f"MediaUrl{index}")
        if url:
            media.append({"url": url, "content_type": params.get(f"MediaContentType{index}", "")})
    # `from` lets a worker answer (or recover) the message without another look-up.
    meta: dict[str, Any] = {"from": sender, "to": params.get("To", "")}
    if media:
        meta["media"] = media
    if keyword:
        meta["keyword"] = keyword
    if params.get("NumSegments", "").isdigit():
        meta["segments"] = int(params["NumSegments"])
    return meta
