"""The web chat's socket.io server.

A browser keeps a random session token in localStorage; the database stores only its hash as
the channel address. Each message carries a client id, so a message resent after a reconnect is
stored and answered once. All tabs of one conversation share a room and see the same messages.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import socketio

from bot.contract import Channel, Inbound, StoredMessage
from bot.linking import LinkError, PhoneLinking
from bot.orchestrator import InvalidMessage, Orchestrator
from bot.phrases import phrase
from bot.store import ConversationInfo, ConversationStore

log = logging.getLogger(__name__)

MAX_CLIENT_ID = 64
MAX_TOKEN = 128


def token_address(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _first_supported_language(environ: dict[str, Any], supported: list[str], default: str) -> str:
    header = str(environ.get("HTTP_ACCEPT_LANGUAGE", ""))
    for part in header.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in supported:
            return code
    return default


class WebChat:
    def __init__(
        self,
        *,
        orchestrator: Orchestrator,
        store: ConversationStore,
        supported_languages: list[str],
        default_language: str,
        history_limit: int,
        cors_origins: list[str],
        redis_url: str | None = None,
        linking: PhoneLinking | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._linking = linking
        self._store = store
        self._languages = supported_languages
        self._default_language = default_language
        self._history_limit = history_limit
        manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            # Same-origin by default; an embedding site must be listed in CORS_ORIGINS.
            cors_allowed_origins=cors_origins or [],
            max_http_buffer_size=256 * 1024,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self.connect)
        self.sio.on("user_message", self.user_message)
        self.sio.on("link_phone", self.link_phone)
        self.sio.on("verify_phone", self.verify_phone)
        self.sio.on("*", self.unknown_event)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        conversation = None
        if isinstance(token, str) and 16 <= len(token) <= MAX_TOKEN:
            conversation = await self._store.find_conversation(
                channel=Channel.WEB, address=token_address(token)
            )
        if conversation is None:
            token = secrets.token_urlsafe(32)
            language = _first_supported_language(environ, self._languages, self._default_language)
            conversation = await self._store.open_conversation(
                channel=Channel.WEB, address=token_address(token), language=language
            )
        await self.sio.save_session(
            sid, {"address": token_address(str(token)), "conversation_id": conversation.id}
        )
        await self.sio.enter_room(sid, conversation.id)
        history = await self._store.history(conversation.id, limit=self._history_limit)
        if history:
            await self._store.audit(
                actor="patient:web",
                action="conversation.history_read",
                conversation=conversation,
                detail={"messages": len(history)},
            )
        linked = (
            await self._linking.linked_phone(conversation.patient_id) if self._linking else None
        )
        await self.sio.emit(
            "session",
            {"token": token, "conversation_id": conversation.id, "linked_phone": linked},
            to=sid,
        )
        await self.sio.emit("history", {"messages": [m.as_dict() for m in history]}, to=sid)

    async def user_message(self, sid: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            return _refusal("invalid", "Send {client_id, text}.")
        client_id, text, payload = data.get("client_id"), data.get("text"), data.get("payload")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
            return _refusal("invalid", "Each message needs a client_id (at most 64 characters).")
        if not isinstance(text, str) or (payload is not None and not isinstance(payload, str)):
            return _refusal("invalid", "The message text must be a string.")
        session = await self.sio.get_session(sid)
        room = session["conversation_id"]
        inbound = Inbound(
            channel=Channel.WEB,
            sender_address=session["address"],
            text=text,
            vendor_message_id=client_id,
            vendor_ids={"socket_sid": sid},
            metadata={"client_id": client_id},
            payload=payload[:256] if payload else None,
        )
        await self.sio.emit("typing", {"active": True}, room=room)
        try:
            result = await self._orchestrator.handle(
                inbound, stream=_DraftStream(self.sio, room, client_id)
            )
        except InvalidMessage as exc:
            if exc.code == "rate_limited":
                await self.sio.emit(
                    "error_message", {"code": exc.code, "message": exc.message}, to=sid
                )
            return _refusal(exc.code, exc.message)
        except Exception:
            log.exception("web message could not be processed")
            return _refusal("server_error", "Something went wrong. Please try again in a moment.")
        finally:
            await self.sio.emit("typing", {"active": False}, room=room)
        if result.duplicate:
            await self._send(result.replies, to=sid)
        else:
            await self.sio.emit("message", result.inbound.as_dict(), room=room, skip_sid=sid)
            await self._send(result.replies, room=room)
        return {"ok": True, "message": result.inbound.as_dict()}

    async def push(self, conversation_id: str, messages: Sequence[StoredMessage]) -> None:
        """Show messages that did not come from this page's own turn (a staff member's reply)
        on every open page of the conversation, in any web process (Redis manager)."""
        await self._send(tuple(messages), room=conversation_id)

    async def link_phone(self, sid: str, data: Any) -> dict[str, Any]:
        """Send a one-time code to the phone the patient typed (see bot/linking.py)."""
        phone = data.get("phone") if isinstance(data, dict) else None
        if not isinstance(phone, str) or not 0 < len(phone) <= 40:
            return _refusal("invalid", "Send {phone}.")
        conversation, language = await self._conversation(sid)
        if self._linking is None or conversation is None:
            return _refusal("sms_unavailable", phrase("link_sms_unavailable", language))
        try:
            shown = await self._linking.start(conversation, phone, language)
        except LinkError as exc:
            return _refusal(exc.code, phrase(f"link_{exc.code}", language))
        return {"ok": True, "masked": shown, "expires_in_s": self._linking.code_ttl_s}

    async def verify_phone(self, sid: str, data: Any) -> dict[str, Any]:
        code = data.get("code") if isinstance(data, dict) else None
        if not isinstance(code, str) or not 0 < len(code) <= 16:
            return _refusal("invalid", "Send {code}.")
        conversation, language = await self._conversation(sid)
        if self._linking is None or conversation is None:
            return _refusal("sms_unavailable", phrase("link_sms_unavailable", language))
        try:
            shown = await self._linking.verify(conversation, code)
        except LinkError as exc:
            refusal = _refusal(
                exc.code, phrase(f"link_{exc.code}", language, attempts=exc.attempts_left)
            )
            if exc.attempts_left is not None:
                refusal["attempts_left"] = exc.attempts_left
            return refusal
        return {"ok": True, "masked": shown}

    async def _conversation(self, sid: str) -> tuple[ConversationInfo | None, str]:
        session = await self.sio.get_session(sid)
        conversation = await self._store.get_conversation(session["conversation_id"])
        return conversation, conversation.language if conversation else self._default_language

    async def unknown_event(self, event: str, sid: str, *_: Any) -> dict[str, Any]:
        log.info("ignored unknown socket event", extra={"event": str(event)[:64]})
        return _refusal("unknown_event", "Unknown event.")

    async def _send(
        self, replies: tuple[StoredMessage, ...], *, to: str | None = None, room: str | None = None
    ) -> None:
        for reply in replies:
            await self.sio.emit("message", reply.as_dict(), to=to, room=room)


class _DraftStream:
    """An answer as it is written, shown as a draft under the patient's message (`draft` events:
    `{"reply_to": client_id, "delta": text}` or `{"reply_to": client_id, "reset": true}`). The
    stored reply arrives as a normal `message` event afterwards and replaces the draft, so a
    client that ignores drafts loses nothing."""

    def __init__(self, sio: socketio.AsyncServer, room: str, client_id: str) -> None:
        self._sio = sio
        self._room = room
        self._client_id = client_id

    async def piece(self, text: str) -> None:
        await self._sio.emit("draft", {"reply_to": self._client_id, "delta": text}, room=self._room)

    async def reset(self) -> None:
        await self._sio.emit("draft", {"reply_to": self._client_id, "reset": True}, room=self._room)


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}
