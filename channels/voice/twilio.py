"""Twilio Voice: the call webhook, the Media Streams WebSocket, and turn-based fallback.

    POST /channels/voice/twilio          a call arrives (PSTN number, or 3CX via a SIP Domain)
    WS   /channels/voice/stream          Twilio Media Streams: our speech pipeline
    POST /channels/voice/twilio/gather   <Gather input="speech"> turns (VOICE_MODE=gather, or
                                         when the stream could not run)
    POST /channels/voice/twilio/dial     the outcome of a transfer (<Dial action>)
    POST /channels/voice/twilio/status   call status callbacks (hang-up)

Every POST must carry a valid `X-Twilio-Signature` for `PUBLIC_BASE_URL` + path (else 403);
the stream's `start` message must carry the per-call token the webhook put in its
`<Parameter>`, for a call that is live and has no stream yet (else the socket is closed).
TwiML is written with the official library; no Twilio format leaves this module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import requests
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import Connect, Dial, Gather, VoiceResponse

from bot.contract import Channel, Inbound, Outbound
from bot.orchestrator import InvalidMessage, Orchestrator
from bot.phrases import phrase
from bot.store import ConversationStore
from channels.sms.delivery import sms_delivery
from channels.sms.twilio_api import make_client, public_url
from channels.sms.twilio_api import signed_form as twilio_form
from channels.voice.engines import EngineUnavailable, SpeechToText, TextToSpeech
from channels.voice.session import Call, CallSession, VoiceConfig, accepts_transfer
from channels.voice.vad import EndpointConfig
from core.orm import Message, VoiceCall, utcnow
from core.settings import Settings

log = logging.getLogger(__name__)

VOICE_PATH = "/channels/voice/twilio"
GATHER_PATH = "/channels/voice/twilio/gather"
DIAL_PATH = "/channels/voice/twilio/dial"
STATUS_PATH = "/channels/voice/twilio/status"
STREAM_PATH = "/channels/voice/stream"
# A media message is 20 ms of audio (about 300 bytes of JSON); anything near this is not Twilio.
MAX_STREAM_MESSAGE = 64 * 1024
# Twilio's stand-ins for a withheld caller ID.
_ANONYMOUS = {"", "anonymous", "restricted", "unknown", "private", "+266696687", "+7378742833"}
_TWILIO_LANGUAGE = {"en": "en-US", "es": "es-US"}
_ENDED = ("completed", "busy", "failed", "no-answer", "canceled")


def stream_token(secret: bytes, call_sid: str, expires: int) -> str:
    mac = hmac.new(secret, f"{call_sid}.{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def token_valid(secret: bytes, call_sid: str, token: str, now: float) -> bool:
    expires, _, _ = token.partition(".")
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(stream_token(secret, call_sid, int(expires)), token)


def caller_address(raw: str, region: str) -> tuple[str | None, str]:
    """The caller's E.164 number and how the call came: "pstn", or "sip" from a PBX trunk
    (From is then a SIP URI, `sip:+15551234567@pbx.example.org`, whose user part 3CX sets to
    the caller ID it received). None when the caller ID is withheld or not a phone number."""
    value, via = raw.strip(), "pstn"
    if value.lower().startswith(("sip:", "sips:")):
        via = "sip"
        value = value.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    if value.lower() in _ANONYMOUS:
        return None, via
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, via
    if not phonenumbers.is_possible_number(parsed):
        return None, via
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), via


def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type="text/xml")


def _refuse(status: int, reason: str) -> Response:
    return Response(reason, status_code=status, media_type="text/plain")


@dataclass(frozen=True)
class CallRecord:
    call_sid: str
    conversation_id: str
    caller: str
    language: str
    status: str
    stream_sid: str | None
    staff_requested: bool
    transfer_to: str | None


def _record(row: VoiceCall) -> CallRecord:
    return CallRecord(
        row.call_sid,
        row.conversation_id,
        row.caller,
        row.language,
        row.status,
        row.stream_sid,
        row.staff_requested,
        row.transfer_to,
    )


class VoiceCalls:
    """What is kept about calls, and what can be done to a live one (any process: Twilio's
    REST API acts on the call wherever its stream is)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: ConversationStore,
        orchestrator: Orchestrator,
        enqueue: Any,
        sms_send_task: str,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._store = store
        self._orchestrator = orchestrator
        self._enqueue = enqueue
        self._sms_send_task = sms_send_task
        self._client: Any = None

    async def open(
        self, *, call_sid: str, caller: str | None, called: str, via: str, mode: str
    ) -> CallRecord:
        address = caller or f"anonymous:{call_sid}"
        async with self._sessions() as session:
            existing = await session.get(VoiceCall, call_sid)
            if existing is not None:
                # Twilio retried the webhook: the same call, the same conversation.
                return _record(existing)
        conversation = await self._store.find_conversation(channel=Channel.VOICE, address=address)
        if conversation is None:
            conversation = await self._store.open_conversation(
                channel=Channel.VOICE, address=address, language=self._settings.default_language
            )
        row = VoiceCall(
            call_sid=call_sid,
            conversation_id=conversation.id,
            caller=address,
            called=called[:64] or None,
            via=via,
            mode=mode,
            status="in-progress",
            language=conversation.language or self._settings.default_language,
        )
        async with self._sessions() as session, session.begin():
            await session.merge(row)
        await self._store.audit(
            actor="voice",
            action="call.started",
            conversation=conversation,
            detail={"call_sid": call_sid, "via": via, "mode": mode},
        )
        return _record(row)

    async def get(self, call_sid: str) -> CallRecord | None:
        async with self._sessions() as session:
            row = await session.get(VoiceCall, call_sid)
        return _record(row) if row else None

    async def attach_stream(self, call_sid: str, stream_sid: str) -> CallRecord | None:
        """The one stream of a live call. A replayed `start`, or a second socket, gets None."""
        async with self._sessions() as session, session.begin():
            won = await session.execute(
                update(VoiceCall)
                .where(VoiceCall.call_sid == call_sid)
                .where(VoiceCall.stream_sid.is_(None))
                .where(VoiceCall.status.not_in(_ENDED))
                .values(stream_sid=stream_sid)
            )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return await self.get(call_sid)

    async def ended(self, call_sid: str, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(VoiceCall)
                .where(VoiceCall.call_sid == call_sid)
                .where(VoiceCall.ended_at.is_(None))
                .values(status=status, ended_at=utcnow())
            )

    # -- CallActions -------------------------------------------------------------------------

    async def transfer(self, call_sid: str, target: str, language: str) -> bool:
        return await self.transfer_with(call_sid, target, phrase("voice_connecting", language))

    async def transfer_with(self, call_sid: str, target: str, announce: str) -> bool:
        number = self.number_for(target)
        call = await self.get(call_sid)
        if number is None or call is None:
            return False
        twiml = VoiceResponse()
        twiml.say(announce, language=_TWILIO_LANGUAGE.get(call.language, "en-US"))
        twiml.append(self.dial(number, target))
        # Recorded first: Twilio ends the media stream as soon as the call's TwiML changes,
        # and the stream's end must not be taken for a caller who hung up.
        await self._set_transfer(call_sid, target, "dialing")
        try:
            await asyncio.to_thread(self._update_call, call_sid, str(twiml))
        except (TwilioRestException, requests.RequestException) as exc:
            # 21220: the caller hung up meanwhile.
            reason = getattr(exc, "code", None) or type(exc).__name__
            log.warning("could not transfer the call (%s)", reason)
            await self._set_transfer(call_sid, None, "failed")
            return False
        await self._audit(call, "call.transferred", {"to": target})
        return True

    async def transfer_outcome(self, call_sid: str, status: str) -> None:
        """What Twilio's <Dial action> reported: completed, answered, busy, no-answer..."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(VoiceCall)
                .where(VoiceCall.call_sid == call_sid)
                .values(transfer_status=status)
            )

    async def _set_transfer(self, call_sid: str, target: str | None, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(VoiceCall)
                .where(VoiceCall.call_sid == call_sid)
                .values(transfer_to=target, transfer_status=status)
            )

    def dial(self, number: str, target: str) -> Dial:
        # No callerId: on a forwarded inbound call Twilio presents the patient's own number.
        dial = Dial(
            action=public_url(self._settings, DIAL_PATH, urlencode({"target": target})),
            method="POST",
            timeout=self._settings.voice_dial_timeout_s,
        )
        dial.number(number)
        return dial

    async def staff_requested(self, call_sid: str) -> None:
        call = await self.get(call_sid)
        if call is None:
            return
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(VoiceCall).where(VoiceCall.call_sid == call_sid).values(staff_requested=True)
            )
        await self._orchestrator.request_staff(call.conversation_id, how="keypad")

    async def annotate(self, message_id: str, voice: dict[str, Any]) -> None:
        async with self._sessions() as session, session.begin():
            message = await session.scalar(select(Message).where(Message.id == message_id))
            if message is None:
                return
            meta = dict(message.meta or {})
            meta["voice"] = {**meta.get("voice", {}), **voice}
            message.meta = meta

    async def handled(self, message_id: str, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status=status, processed_at=utcnow())
            )

    async def staff_claimed(self, conversation_id: str, shown_as: str) -> bool:
        """A case was claimed while the patient is on the phone: a warm transfer to the staff
        line, when there is one. False when there is no live call or no number to dial."""
        if not self._settings.voice_staff_number:
            return False
        async with self._sessions() as session:
            call_sid = await session.scalar(
                select(VoiceCall.call_sid)
                .where(VoiceCall.conversation_id == conversation_id)
                .where(VoiceCall.ended_at.is_(None))
                .where(VoiceCall.transfer_to.is_(None))
                .order_by(VoiceCall.started_at.desc())
                .limit(1)
            )
            call = await session.get(VoiceCall, call_sid) if call_sid else None
        if call is None:
            return False
        announce = phrase(
            "voice_staff_joining",
            call.language,
            staff=shown_as,
            clinic=self._settings.clinic_name,
        )
        return await self.transfer_with(call.call_sid, "staff", announce)

    async def follow_up(self, call_sid: str) -> bool:
        """After a call where staff were asked for and nobody took it: a text saying staff
        will get back to the patient (consent is checked by the SMS sender). Once per call."""
        if not self._settings.sms_enabled:
            return False
        # The caller is encrypted: a withheld number is told apart here, not in SQL.
        call = await self.get(call_sid)
        if call is None or call.caller.startswith("anonymous:"):
            return False
        async with self._sessions() as session, session.begin():
            won = await session.execute(
                update(VoiceCall)
                .where(VoiceCall.call_sid == call_sid)
                .where(VoiceCall.staff_requested.is_(True))
                .where(VoiceCall.follow_up_sent.is_(False))
                .values(follow_up_sent=True)
            )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            return False
        call = await self.get(call_sid)
        conversation = await self._store.get_conversation(call.conversation_id) if call else None
        if call is None or conversation is None:
            return False
        text = phrase(
            "voice_follow_up_sms",
            call.language,
            clinic=self._settings.clinic_name,
            emergency_number=self._settings.emergency_number,
        )
        outbound = Outbound(conversation.id, Channel.SMS, text, language=call.language)
        replies = [
            replace(reply, sender="system", meta={**reply.meta, "from_call": True})
            for reply in sms_delivery(outbound, call.caller)
        ]
        stored = await self._store.add_replies(
            conversation=conversation,
            channel=Channel.SMS,
            in_reply_to=None,
            language=call.language,
            replies=replies,
        )
        try:
            await self._enqueue(self._sms_send_task, [m.id for m in stored])
        except Exception:
            log.exception("could not queue the follow-up text")
        await self._audit(call, "call.follow_up_texted", {})
        return True

    def number_for(self, target: str) -> str | None:
        if target == "oncall":
            return self._settings.voice_oncall_number
        return self._settings.voice_staff_number

    def _update_call(self, call_sid: str, twiml: str) -> None:
        if self._client is None:
            self._client = make_client(self._settings)
        self._client.calls(call_sid).update(twiml=twiml)

    async def _audit(self, call: CallRecord, action: str, detail: dict[str, Any]) -> None:
        conversation = await self._store.get_conversation(call.conversation_id)
        await self._store.audit(
            actor="voice",
            action=action,
            conversation=conversation,
            detail={"call_sid": call.call_sid, **detail},
        )


@dataclass(frozen=True)
class Engines:
    stt: SpeechToText
    tts: TextToSpeech


class _StreamAudio:
    """CallAudio over one Twilio Media Streams socket."""

    def __init__(self, websocket: WebSocket, stream_sid: str) -> None:
        self._ws = websocket
        self._sid = stream_sid
        self._lock = asyncio.Lock()

    async def send_audio(self, frames: list[bytes]) -> None:
        async with self._lock:
            for frame in frames:
                payload = base64.b64encode(frame).decode("ascii")
                await self._ws.send_text(
                    json.dumps(
                        {"event": "media", "streamSid": self._sid, "media": {"payload": payload}}
                    )
                )

    async def send_mark(self, name: str) -> None:
        async with self._lock:
            await self._ws.send_text(
                json.dumps({"event": "mark", "streamSid": self._sid, "mark": {"name": name}})
            )

    async def clear(self) -> None:
        async with self._lock:
            await self._ws.send_text(json.dumps({"event": "clear", "streamSid": self._sid}))


def voice_config(settings: Settings) -> VoiceConfig:
    return VoiceConfig(
        clinic_name=settings.clinic_name,
        emergency_number=settings.emergency_number,
        staff_digit=settings.voice_staff_digit,
        transfer_digit=settings.voice_transfer_digit,
        oncall_number=settings.voice_oncall_number,
        staff_number=settings.voice_staff_number,
        barge_in_ms=settings.voice_barge_in_ms,
        endpoint=EndpointConfig(
            aggressiveness=settings.voice_vad_aggressiveness,
            end_silence_ms=settings.voice_end_silence_ms,
            max_utterance_ms=int(settings.voice_max_utterance_s * 1000),
        ),
    )


def build_router(
    *,
    settings: Settings,
    orchestrator: Orchestrator,
    calls: VoiceCalls,
    engines: Engines | None,
) -> APIRouter:
    """`engines` None: streaming is unavailable (an engine could not load); calls are answered
    turn by turn with <Gather>."""
    router = APIRouter(tags=["voice channel"], include_in_schema=False)
    secret = settings.secret()
    config = voice_config(settings)
    streaming = settings.voice_mode == "stream" and engines is not None

    async def signed_form(request: Request, path: str) -> dict[str, str] | Response:
        params = await twilio_form(
            request, settings, path, enabled=settings.voice_enabled, what="phone call"
        )
        if isinstance(params, dict) and not params.get("CallSid"):
            return _refuse(400, "CallSid is required.")
        return params

    def say(response: VoiceResponse | Gather, text: str, language: str) -> None:
        response.say(text, language=_TWILIO_LANGUAGE.get(language, "en-US"))

    def gather(turn: int, language: str, *, offer: str | None = None) -> Gather:
        query = {"turn": str(turn)} | ({"offer": offer} if offer else {})
        return Gather(
            input="speech dtmf",
            num_digits=1,
            action=public_url(settings, GATHER_PATH, urlencode(query)),
            method="POST",
            language=_TWILIO_LANGUAGE.get(language, "en-US"),
            speech_timeout="auto",
            action_on_empty_result=True,
        )

    def greeting(language: str) -> Gather:
        """The first turn-by-turn prompt of a call."""
        prompt = gather(1, language)
        say(prompt, phrase("voice_greeting", language), language)
        return prompt

    @router.post(VOICE_PATH)
    async def incoming(request: Request) -> Response:
        params = await signed_form(request, VOICE_PATH)
        if isinstance(params, Response):
            return params
        call_sid = params["CallSid"]
        caller, via = caller_address(params.get("From", ""), settings.default_phone_region)
        call = await calls.open(
            call_sid=call_sid,
            caller=caller,
            called=params.get("To", ""),
            via=via,
            mode="stream" if streaming else "gather",
        )
        response = VoiceResponse()
        say(
            response,
            phrase(
                "voice_disclosure",
                call.language,
                clinic=settings.clinic_name,
                staff_digit=settings.voice_staff_digit,
            ),
            call.language,
        )
        if streaming:
            base = (settings.public_base_url or "").rstrip("/")
            scheme = "ws" if base.startswith("http://") else "wss"
            ws_url = f"{scheme}://{base.split('://', 1)[-1]}{STREAM_PATH}"
            token = stream_token(
                secret, call_sid, int(time.time()) + settings.voice_stream_token_ttl_s
            )
            # When the stream cannot run (or drops), Twilio goes on to the Connect's action:
            # the call continues turn by turn.
            connect = Connect(action=public_url(settings, GATHER_PATH, "turn=0"), method="POST")
            stream = connect.stream(url=ws_url)
            stream.parameter(name="token", value=token)
            response.append(connect)
        else:
            response.append(greeting(call.language))
        return _twiml(response)

    @router.post(GATHER_PATH)
    async def gathered(request: Request) -> Response:
        params = await signed_form(request, GATHER_PATH)
        if isinstance(params, Response):
            return params
        call = await calls.get(params["CallSid"])
        if call is None:
            return _refuse(404, "Unknown call.")
        turn = int(request.query_params.get("turn", "0") or 0)
        offer = request.query_params.get("offer")
        speech = params.get("SpeechResult", "").strip()
        digit = params.get("Digits", "")
        response = VoiceResponse()
        if turn == 0:
            # From the stream's Connect action: the stream ended without a transfer or a
            # hang-up. Continue turn by turn.
            if call.transfer_to is not None:
                response.hangup()
                return _twiml(response)
            response.append(greeting(call.language))
            return _twiml(response)
        language = call.language
        if offer and (digit == settings.voice_transfer_digit or accepts_transfer(speech)):
            number = calls.number_for(offer)
            if number:
                say(response, phrase("voice_connecting", language), language)
                response.append(calls.dial(number, offer))
                return _twiml(response)
        if digit == settings.voice_staff_digit:
            await calls.staff_requested(call.call_sid)
            if settings.voice_staff_number:
                say(response, phrase("voice_connecting", language), language)
                response.append(calls.dial(settings.voice_staff_number, "staff"))
                return _twiml(response)
            prompt = gather(turn + 1, language)
            say(prompt, phrase("voice_staff_requested", language), language)
            response.append(prompt)
            return _twiml(response)
        if not speech:
            prompt = gather(turn + 1, language, offer=offer)
            say(prompt, phrase("voice_not_heard", language), language)
            response.append(prompt)
            return _twiml(response)
        inbound = Inbound(
            channel=Channel.VOICE,
            sender_address=call.caller,
            text=speech,
            language=language,
            vendor_message_id=f"{call.call_sid}:g{turn}",
            vendor_ids={"call_sid": call.call_sid},
            metadata={
                "call_sid": call.call_sid,
                "voice": {"stt_engine": "twilio", "confidence": _float(params.get("Confidence"))},
            },
        )
        try:
            result = await orchestrator.handle(inbound)
        except InvalidMessage as exc:
            log.info("gather turn refused: %s", exc.code)
            result = None
        emergency = bool(result and result.assessed and result.assessed.level == "emergency")
        next_offer = "oncall" if emergency and settings.voice_oncall_number else None
        for reply in result.replies if result else ():
            say(response, reply.text, language)
        prompt = gather(turn + 1, language, offer=next_offer)
        if next_offer:
            say(
                prompt,
                phrase("voice_offer_transfer", language, digit=settings.voice_transfer_digit),
                language,
            )
        response.append(prompt)
        return _twiml(response)

    @router.post(DIAL_PATH)
    async def dialed(request: Request) -> Response:
        params = await signed_form(request, DIAL_PATH)
        if isinstance(params, Response):
            return params
        call_sid = params["CallSid"]
        outcome = params.get("DialCallStatus", "")
        call = await calls.get(call_sid)
        response = VoiceResponse()
        if call is None:
            response.hangup()
            return _twiml(response)
        await calls.transfer_outcome(call_sid, outcome[:16] or "unknown")
        if outcome in ("completed", "answered"):
            response.hangup()
            return _twiml(response)
        # Nobody took the transfer (staff, or the on-call clinician after an emergency): a
        # case stays open for staff, and a text follows the call.
        await calls.staff_requested(call_sid)
        say(
            response,
            phrase("voice_no_one_free", call.language, emergency_number=settings.emergency_number),
            call.language,
        )
        response.hangup()
        await calls.follow_up(call_sid)
        return _twiml(response)

    @router.post(STATUS_PATH)
    async def status(request: Request) -> Response:
        params = await signed_form(request, STATUS_PATH)
        if isinstance(params, Response):
            return params
        call_status = params.get("CallStatus", "")
        if call_status in _ENDED:
            await calls.ended(params["CallSid"], call_status)
            call = await calls.get(params["CallSid"])
            if call is not None and call.transfer_to is None:
                await calls.follow_up(call.call_sid)
        return Response(status_code=204)

    @router.websocket(STREAM_PATH)
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        session: CallSession | None = None
        ended = "stream_closed"
        try:
            while True:
                raw = await websocket.receive_text()
                if len(raw) > MAX_STREAM_MESSAGE:
                    log.warning("ignored an oversized media stream message")
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    log.warning("ignored a media stream message that is not JSON")
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("event")
                if kind == "connected":
                    continue
                if kind == "start" and session is None:
                    session = await _start(websocket, event)
                    if session is None:
                        await websocket.close(code=1008, reason="invalid stream start")
                        return
                    continue
                if session is None:
                    log.warning("media stream message before a valid start; closing")
                    await websocket.close(code=1008, reason="start first")
                    return
                if kind == "media":
                    payload = _payload(event)
                    if payload:
                        await session.media(payload)
                elif kind == "dtmf":
                    digit = str((event.get("dtmf") or {}).get("digit", ""))[:1]
                    if digit:
                        await session.dtmf(digit)
                elif kind == "mark":
                    await session.mark(str((event.get("mark") or {}).get("name", "")))
                elif kind == "stop":
                    ended = "stop"
                    break
        except WebSocketDisconnect:
            ended = "disconnected"
        finally:
            if session is not None:
                await session.close(ended)
                if ended == "stop":
                    # Twilio stops the stream when the call ends or its TwiML is replaced (a
                    # transfer, recorded before the replacement).
                    call = await calls.get(session.call.call_sid)
                    if call is not None and call.transfer_to is None:
                        await calls.ended(call.call_sid, "completed")
                        await calls.follow_up(call.call_sid)

    async def _start(websocket: WebSocket, event: dict[str, Any]) -> CallSession | None:
        start = event.get("start") or {}
        if not isinstance(start, dict) or engines is None:
            return None
        call_sid = str(start.get("callSid", ""))
        stream_sid = str(start.get("streamSid") or event.get("streamSid") or "")
        token = str((start.get("customParameters") or {}).get("token", ""))
        if start.get("accountSid") != settings.twilio_account_sid or not stream_sid:
            log.warning("refused a media stream for another account or without a stream id")
            return None
        if not token_valid(secret, call_sid, token, time.time()):
            log.warning("refused a media stream with an invalid or expired call token")
            return None
        media_format = start.get("mediaFormat") or {}
        if media_format and (
            media_format.get("encoding") != "audio/x-mulaw"
            or int(media_format.get("sampleRate", 8000)) != 8000
        ):
            log.warning("refused a media stream that is not 8 kHz μ-law")
            return None
        call = await calls.attach_stream(call_sid, stream_sid)
        if call is None:
            log.warning("refused a second or late stream for a call")
            return None
        session = CallSession(
            Call(call_sid, stream_sid, call.caller, call.language),
            audio=_StreamAudio(websocket, stream_sid),
            actions=calls,
            orchestrator=orchestrator,
            stt=engines.stt,
            tts=engines.tts,
            config=config,
        )
        await session.start()
        return session

    return router


def _payload(event: dict[str, Any]) -> bytes | None:
    media = event.get("media") or {}
    if not isinstance(media, dict) or media.get("track", "inbound") not in (
        "inbound",
        "inbound_track",
    ):
        return None
    try:
        return base64.b64decode(str(media.get("payload", "")), validate=True)
    except (binascii.Error, ValueError):
        log.warning("ignored a media message whose payload is not base64")
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def load_engines(settings: Settings) -> Engines | None:
    """The speech engines, or None (with the reason logged) when one cannot load: calls then
    continue turn by turn with Twilio's own speech recognition."""
    from channels.voice.engines import speech_to_text, text_to_speech

    try:
        return Engines(speech_to_text(settings), text_to_speech(settings))
    except EngineUnavailable as exc:
        log.error("voice streaming unavailable, calls use <Gather>: %s", exc)
        return None
    except Exception:
        # A model that fails to load (a CUDA device asked of a CPU build of torch, a corrupt
        # checkpoint) must not keep the rest of the platform down.
        log.exception("voice streaming unavailable, calls use <Gather>: an engine failed to load")
        return None
