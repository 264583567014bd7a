"""The one path every patient message takes, whatever its channel:

store inbound -> safety layer -> dialogue (Rasa) -> render per channel -> store outbound.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limits import parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from bot.contract import (
    Button,
    ConversationState,
    Inbound,
    Outbound,
    SafetyAssessment,
    TriageResult,
    TurnResult,
)
from bot.language import detect_language
from bot.phrases import phrase
from bot.rasa_client import DialogueEngine, DialogueUnavailable
from bot.render import render
from bot.safety import SafetyLayer
from bot.store import ConversationInfo, ConversationStore
from bot.text import clean_for_storage, is_blank, normalize_for_understanding

log = logging.getLogger(__name__)

FollowUpHook = Callable[[str, str], Awaitable[None]]
# A button payload may force an intent, never set entities or slots.
_INTENT_PAYLOAD = re.compile(r"^/[a-z_]{1,64}$")


class InvalidMessage(Exception):
    """The message cannot be accepted as sent; `code` is stable, `message` is for the patient."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class RateLimited(InvalidMessage):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__("rate_limited", message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class OrchestratorConfig:
    supported_languages: list[str]
    default_language: str
    emergency_number: str
    max_message_chars: int
    rate_limit_per_sender: str


class Orchestrator:
    def __init__(
        self,
        *,
        config: OrchestratorConfig,
        store: ConversationStore,
        safety: SafetyLayer,
        dialogue: DialogueEngine,
        rate_limit_storage: Storage,
        on_follow_up: FollowUpHook | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._safety = safety
        self._dialogue = dialogue
        # Sliding-window counters keep two numbers per sender; a moving window keeps every hit,
        # and limits' in-memory store expires each of those through a thread hop.
        self._limiter = SlidingWindowCounterRateLimiter(rate_limit_storage)
        self._rate_limit = parse(config.rate_limit_per_sender)
        self._on_follow_up = on_follow_up

    async def handle(self, inbound: Inbound) -> TurnResult:
        known = await self._store.find_conversation(
            channel=inbound.channel, address=inbound.sender_address
        )
        reply_language = self._language_hint(inbound, known)
        self._validate(inbound, reply_language)
        await self._check_rate(inbound, reply_language)

        understood = normalize_for_understanding(inbound.text)
        language = self._language(inbound, understood, reply_language)
        conversation = known or await self._store.open_conversation(
            channel=inbound.channel, address=inbound.sender_address, language=language
        )
        message, duplicate = await self._store.store_inbound(
            conversation=conversation,
            inbound=inbound,
            text=clean_for_storage(inbound.text),
            language=language,
        )
        before = _state(conversation)
        if duplicate:
            replies = await self._store.replies_to(message.id)
            return TurnResult(conversation.id, message, tuple(replies), before, True)

        safety = self._safety.assess(understood, language=language)
        dialogue_started = time.perf_counter()
        answers, status, follow_up = await self._respond(
            conversation, inbound, understood, language
        )
        dialogue_ms = (time.perf_counter() - dialogue_started) * 1000
        rendered = [
            render(
                Outbound(
                    conversation_id=conversation.id,
                    channel=inbound.channel,
                    text=text,
                    buttons=buttons,
                    language=language,
                )
            )
            for text, buttons in answers
        ]
        stored_replies = await self._store.complete_turn(
            conversation=conversation,
            inbound_id=message.id,
            replies=[(o.text, o.buttons, o.sender) for o in rendered],
            status=status,
            needs_follow_up=follow_up,
            language=language,
            safety=safety,
            dialogue_ms=round(dialogue_ms, 2),
        )
        if follow_up:
            await self._store.audit(
                actor="orchestrator",
                action="message.follow_up_needed",
                conversation=conversation,
                detail={"message_id": message.id, "reason": status},
            )
            if self._on_follow_up:
                await self._on_follow_up(conversation.id, message.id)
        state = ConversationState(
            mode=before.mode,
            safety=safety if safety.level != "none" else before.safety,
            triage=before.triage,
        )
        return TurnResult(conversation.id, message, tuple(stored_replies), state)

    async def _respond(
        self, conversation: ConversationInfo, inbound: Inbound, understood: str, language: str
    ) -> tuple[list[tuple[str, tuple[Button, ...]]], str, bool]:
        """Replies, the inbound message's final status, and whether staff must follow up."""
        if conversation.mode == "staff":
            return [], "relayed", False
        if not understood:
            # Only invisible characters: nothing to understand, but the patient deserves an answer.
            return [(phrase("rephrase", language), ())], "processed", False
        try:
            replies = await self._dialogue.respond(
                conversation_id=conversation.id,
                text=_dialogue_text(inbound, understood),
                metadata={"language": language, "channel": inbound.channel.value},
            )
        except DialogueUnavailable as exc:
            log.warning(
                "dialogue unavailable, message kept for follow-up",
                extra={"conversation_id": conversation.id, "reason": str(exc)},
            )
            text = phrase(
                "assistant_unavailable", language, emergency_number=self._config.emergency_number
            )
            return [(text, ())], "failed", True
        return [(r.text, r.buttons) for r in replies], "processed", False

    def _validate(self, inbound: Inbound, language: str) -> None:
        if is_blank(inbound.text) and not inbound.payload:
            raise InvalidMessage("empty", phrase("empty", language))
        if len(inbound.text) > self._config.max_message_chars:
            raise InvalidMessage(
                "too_long", phrase("too_long", language, max_chars=self._config.max_message_chars)
            )

    async def _check_rate(self, inbound: Inbound, language: str) -> None:
        key = (inbound.channel.value, inbound.sender_address)
        if not await self._limiter.hit(self._rate_limit, *key):
            stats = await self._limiter.get_window_stats(self._rate_limit, *key)
            retry_after = max(1, int(stats.reset_time - time.time()))
            log.warning("rate limited sender", extra={"channel": inbound.channel.value})
            raise RateLimited(phrase("rate_limited", language), retry_after)

    def _language_hint(self, inbound: Inbound, known: ConversationInfo | None) -> str:
        if inbound.language in self._config.supported_languages:
            return str(inbound.language)
        return known.language if known else self._config.default_language

    def _language(self, inbound: Inbound, understood: str, hint: str) -> str:
        """The message's language: the channel's word for it, else detected, else the hint."""
        if inbound.language in self._config.supported_languages:
            return hint
        return detect_language(
            understood, supported=self._config.supported_languages, fallback=hint
        )


def _dialogue_text(inbound: Inbound, understood: str) -> str:
    # Rasa reads a leading "/" as an intent to force; only a button payload may do that.
    if inbound.payload and _INTENT_PAYLOAD.match(inbound.payload):
        return inbound.payload
    return understood.lstrip("/").strip() or understood


def _state(conversation: ConversationInfo) -> ConversationState:
    triage = None
    if conversation.triage:
        triage = TriageResult(
            disposition=conversation.triage["disposition"],
            reasons=tuple(conversation.triage.get("reasons", ())),
        )
    level = conversation.safety_level
    return ConversationState(
        mode="staff" if conversation.mode == "staff" else "bot",
        safety=SafetyAssessment(
            level=level if level in ("emergency", "crisis") else "none",  # type: ignore[arg-type]
            rule_ids=conversation.safety_rule_ids,
        ),
        triage=triage,
    )
