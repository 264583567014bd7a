"""The one path every patient message takes, whatever its channel:

store inbound -> safety layer -> dialogue (Rasa) -> render per channel -> store outbound.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from limits import parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from bot.contract import (
    Button,
    Channel,
    ConversationState,
    Inbound,
    Outbound,
    ReplyKind,
    SafetyAssessment,
    StoredMessage,
    TriageResult,
    TurnResult,
)
from bot.language import detect_language
from bot.phrases import phrase
from bot.rasa_client import DialogueEngine, DialogueUnavailable
from bot.render import PROFILES, option_choice, render
from bot.safety import SafetyLayer
from bot.safety_replies import (
    Resources,
    advance_protocol,
    protocol_question,
    safety_replies,
    start_protocol,
)
from bot.store import (
    FEEDBACK_PAYLOADS,
    KEEP,
    ConversationInfo,
    ConversationStore,
    Deadlines,
    NewReply,
    TurnAlreadyCompleted,
)
from bot.text import clean_for_storage, is_blank, normalize_for_understanding
from core import metrics
from rag.answer import KnowledgeAnswer, decline_text

log = logging.getLogger(__name__)

FollowUpHook = Callable[[str, str], Awaitable[None]]
# (escalation id, priority): tells staff about a new or more urgent case.
EscalationHook = Callable[[str, str], Awaitable[None]]
# (message ids of one turn): copies a turn into the case channel while a case is active.
RelayHook = Callable[[list[str]], Awaitable[None]]
# Turns in a row the assistant could not answer before staff are asked to step in.
UNANSWERED_LIMIT = 2
# A button payload may force an intent, never set entities or slots.
_INTENT_PAYLOAD = re.compile(r"^/[a-z_]{1,64}$")
# Offered with every knowledge-base decline; Rasa's request_human takes it from there.
_STAFF_BUTTON = {"en": "Talk to a staff member", "es": "Hablar con el personal"}


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


class StreamSink(Protocol):
    """Where a channel that can show an answer as it is written (the web chat) gets the pieces.
    `reset` takes back what was shown when the answer is replaced (a provider failed halfway)."""

    async def piece(self, text: str) -> None: ...

    async def reset(self) -> None: ...


class ReplyDelivery(Protocol):
    """How a channel that sends replies later (SMS) stores them: rendered and split to fit its
    medium, queued for its sender, addressed to the patient."""

    def __call__(self, outbound: Outbound, address: str) -> list[NewReply]: ...


def _deliver_inline(outbound: Outbound, address: str) -> list[NewReply]:
    # Web and API replies go out with the response itself.
    return [NewReply(outbound.text, outbound.buttons, outbound.sender)]


class KnowledgeAnswers(Protocol):
    async def answer(
        self,
        question: str,
        *,
        language: str,
        channel: str,
        on_piece: Callable[[str], Awaitable[None]] | None = None,
        on_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> KnowledgeAnswer: ...


@dataclass(frozen=True)
class OrchestratorConfig:
    supported_languages: list[str]
    default_language: str
    max_message_chars: int
    rate_limit_per_sender: str
    resources: Resources = field(default_factory=Resources)
    deadlines: Deadlines = field(default_factory=Deadlines)


@dataclass(frozen=True)
class _Reply:
    text: str
    buttons: tuple[Button, ...] = ()
    kind: ReplyKind = "dialogue"


@dataclass(frozen=True)
class Accepted:
    """An inbound message stored and ready to be answered (now, or by a worker)."""

    conversation: ConversationInfo
    message: StoredMessage
    channel: Channel
    sender_address: str
    language: str
    payload: str | None
    duplicate: bool = False
    # Over the sender's rate: the safety layer still reads it, the dialogue does not.
    over_rate: bool = False
    has_attachments: bool = False


@dataclass
class _Turn:
    """What answering one message decided, written to the database in one transaction."""

    replies: list[_Reply] = field(default_factory=list)
    status: str = "processed"
    follow_up: bool = False
    triage: dict[str, Any] | None = None
    protocol: Any = KEEP
    audits: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # (priority, reason, rule ids, clinician summary)
    escalations: list[tuple[str, str, tuple[str, ...], str | None]] = field(default_factory=list)
    # Whether the assistant answered (None: not the assistant's turn to, e.g. staff have it).
    unanswered: bool | None = None


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
        on_escalation: EscalationHook | None = None,
        knowledge: KnowledgeAnswers | None = None,
        delivery: dict[Channel, ReplyDelivery] | None = None,
        on_relay: RelayHook | None = None,
    ) -> None:
        self._on_relay = on_relay
        self._config = config
        self._delivery = delivery or {}
        self._knowledge = knowledge
        self._store = store
        self._safety = safety
        self._dialogue = dialogue
        # Sliding-window counters keep two numbers per sender; a moving window keeps every hit,
        # and limits' in-memory store expires each of those through a thread hop.
        self._limiter = SlidingWindowCounterRateLimiter(rate_limit_storage)
        self._rate_limit = parse(config.rate_limit_per_sender)
        self._on_follow_up = on_follow_up
        self._on_escalation = on_escalation

    async def handle(self, inbound: Inbound, *, stream: StreamSink | None = None) -> TurnResult:
        """Store one message and answer it now (web chat, API)."""
        accepted = await self.accept(inbound)
        if accepted.duplicate:
            # The first attempt's process may have died (kill -9, a deploy) after storing the
            # message and before answering it: the resend answers it. Should the first still be
            # running, `complete_turn` keeps whichever answer is stored first.
            if await self._store.message_status(accepted.message.id) != "received":
                return await self._duplicate_result(accepted)
            accepted = replace(accepted, duplicate=False)
        return await self.process(accepted, stream=stream)

    async def accept(
        self, inbound: Inbound, *, refuse_over_rate: bool = True, deferred: bool = False
    ) -> Accepted:
        """Validate and store one message; nothing answers it yet.

        A channel that cannot ask the sender to resend (SMS) passes `refuse_over_rate=False`:
        a message over the rate is then stored and marked instead of refused. A channel whose
        messages a worker answers passes `deferred=True`: the language is detected there, off
        the acknowledgement's path (it is most of its CPU)."""
        known = await self._store.find_conversation(
            channel=inbound.channel, address=inbound.sender_address
        )
        reply_language = self._language_hint(inbound, known)
        self._validate(inbound, reply_language)
        over_rate = False
        try:
            await self._check_rate(inbound, reply_language)
        except RateLimited:
            if refuse_over_rate:
                raise
            over_rate = True

        understood = normalize_for_understanding(inbound.text)
        language = (
            reply_language if deferred else self._language(inbound, understood, reply_language)
        )
        conversation = known or await self._store.open_conversation(
            channel=inbound.channel, address=inbound.sender_address, language=language
        )
        if over_rate:
            inbound = replace(inbound, metadata={**inbound.metadata, "over_rate": True})
        message, duplicate = await self._store.store_inbound(
            conversation=conversation,
            inbound=inbound,
            text=clean_for_storage(inbound.text),
            language=language,
        )
        if not duplicate:
            metrics.count_message(inbound.channel.value, "in")
        return Accepted(
            conversation=conversation,
            message=message,
            channel=inbound.channel,
            sender_address=inbound.sender_address,
            language=language,
            payload=inbound.payload,
            duplicate=duplicate,
            over_rate=over_rate,
            has_attachments=bool(inbound.metadata.get("media")),
        )

    async def process_stored(self, message_id: str) -> TurnResult | None:
        """Answer a message `accept` stored earlier (a worker's job). Runs once per message:
        None when it was already taken, as when a task is delivered twice."""
        claimed = await self._store.claim_inbound(message_id)
        if claimed is None:
            return None
        accepted = Accepted(
            conversation=claimed.conversation,
            message=claimed.message,
            channel=claimed.channel,
            # The channel kept the sender's address with the message when it stored it.
            sender_address=str(claimed.metadata.get("from", "")),
            language=self._detected(
                normalize_for_understanding(claimed.message.text), claimed.language
            ),
            payload=claimed.payload,
            over_rate=bool(claimed.metadata.get("over_rate")),
            has_attachments=bool(claimed.metadata.get("media")),
        )
        return await self.process(accepted)

    async def _duplicate_result(self, accepted: Accepted) -> TurnResult:
        replies = await self._store.replies_to(accepted.message.id)
        state = _state(accepted.conversation)
        return TurnResult(accepted.conversation.id, accepted.message, tuple(replies), state, True)

    async def process(self, accepted: Accepted, *, stream: StreamSink | None = None) -> TurnResult:
        with metrics.TURNS_IN_PROGRESS.track_inprogress(), metrics.timed("turn"):
            return await self._process(accepted, stream=stream)

    async def _process(self, accepted: Accepted, *, stream: StreamSink | None) -> TurnResult:
        conversation, message, language = (
            accepted.conversation,
            accepted.message,
            accepted.language,
        )
        understood = normalize_for_understanding(message.text)
        before = _state(conversation)
        if accepted.payload is None and not PROFILES[accepted.channel].buttons:
            # Options went out numbered (SMS, voice); a bare number picks one.
            offered = await self._store.last_offered_buttons(conversation.id)
            chosen = option_choice(understood, len(offered)) if offered else None
            if chosen is not None:
                accepted = replace(accepted, payload=offered[chosen - 1].payload)
        # The safety layer reads every message first, whoever is answering the conversation.
        with metrics.timed("safety"):
            safety = self._safety.assess(understood, language=language)
        metrics.count_safety_event(safety.level, safety.categories)
        turn = _Turn(audits=[("safety.assessed", _safety_audit(safety))])
        dialogue_started = time.perf_counter()
        follow_up_running = bool(conversation.safety_protocol) and conversation.mode != "staff"
        if safety.level == "emergency" or (safety.level == "crisis" and not follow_up_running):
            await self._safety_turn(turn, conversation, safety, language)
        elif accepted.over_rate:
            # Stored for the record and for staff; the dialogue is not run for a flood.
            turn.status = "rate_limited"
        else:
            if safety.level == "crisis":
                # Crisis words while the follow-up runs answer its question; the case is kept
                # at least at high priority, and the screener decides whether it is imminent.
                turn.escalations.append(("high", "crisis", safety.rule_ids, None))
            await self._respond(turn, accepted, understood, stream)
        dialogue_ms = (time.perf_counter() - dialogue_started) * 1000
        deliver = self._delivery.get(accepted.channel)
        replies: list[NewReply] = []
        for reply in turn.replies:
            outbound = Outbound(
                conversation_id=conversation.id,
                channel=accepted.channel,
                text=reply.text,
                buttons=reply.buttons,
                language=language,
                kind=reply.kind,
            )
            if deliver is None:
                replies.extend(_deliver_inline(render(outbound), accepted.sender_address))
            else:
                replies.extend(deliver(outbound, accepted.sender_address))
        try:
            stored_replies = await self._store.complete_turn(
                conversation=conversation,
                inbound_id=message.id,
                channel=accepted.channel,
                replies=replies,
                status=turn.status,
                needs_follow_up=turn.follow_up,
                language=language,
                safety=safety,
                dialogue_ms=round(dialogue_ms, 2),
                triage=turn.triage,
                safety_protocol=turn.protocol,
                audits=turn.audits,
                unanswered=turn.unanswered,
            )
        except TurnAlreadyCompleted:
            return await self._duplicate_result(accepted)
        metrics.count_message(accepted.channel.value, "out", len(stored_replies))
        if turn.unanswered and conversation.unanswered_streak + 1 >= UNANSWERED_LIMIT:
            turn.escalations.append(("normal", "unanswered", (), None))
        # A case open before this turn gets the turn copied to staff; a case this turn opens
        # shows it on its card.
        relay = self._on_relay is not None and bool(await self._store.active_case(conversation.id))
        for priority, reason, rule_ids, summary in turn.escalations:
            await self._escalate(conversation, priority, reason, rule_ids, summary)
        if turn.follow_up:
            await self._store.audit(
                actor="orchestrator",
                action="message.follow_up_needed",
                conversation=conversation,
                detail={"message_id": message.id, "reason": turn.status},
            )
            if self._on_follow_up:
                await self._on_follow_up(conversation.id, message.id)
        if relay and self._on_relay is not None:
            try:
                await self._on_relay([message.id, *(r.id for r in stored_replies)])
            except Exception:
                # Stored; staff read the whole transcript in the case card and the console.
                log.exception("could not queue the relay to staff")
        state = ConversationState(
            mode=before.mode,
            safety=safety if safety.level != "none" else before.safety,
            triage=_triage_result(turn.triage) if turn.triage else before.triage,
        )
        return TurnResult(conversation.id, message, tuple(stored_replies), state, assessed=safety)

    async def _safety_turn(
        self,
        turn: _Turn,
        conversation: ConversationInfo,
        safety: SafetyAssessment,
        language: str,
    ) -> None:
        """Emergency instructions or the crisis reply, a priority case for staff, and (for a
        crisis) the screening follow-up; the dialogue core does not answer this message."""
        resources = self._config.resources
        turn.replies = [
            _Reply(text, kind="safety") for text in safety_replies(safety, language, resources)
        ]
        priority = "immediate" if safety.level == "emergency" else "high"
        turn.escalations.append((priority, safety.level, safety.rule_ids, None))
        if safety.level == "crisis":
            # A follow-up already running goes on where it was; otherwise one starts.
            protocol = conversation.safety_protocol or start_protocol(safety)
            if protocol is not None:
                turn.protocol = protocol
                turn.replies.append(_Reply(protocol_question(protocol, language), kind="safety"))
                turn.audits.append(("safety.protocol_started", {"protocol": protocol["protocol"]}))
        turn.status = "relayed" if conversation.mode == "staff" else "processed"
        if conversation.mode != "staff":
            await self._dialogue.interrupt(conversation_id=conversation.id)

    async def _respond(
        self,
        turn: _Turn,
        accepted: Accepted,
        understood: str,
        stream: StreamSink | None,
    ) -> None:
        conversation, language = accepted.conversation, accepted.language
        if conversation.mode == "staff":
            turn.status = "relayed"
            return
        if accepted.payload in FEEDBACK_PAYLOADS and await self._store.record_feedback(
            conversation.id, accepted.payload
        ):
            turn.replies = [_Reply(phrase("feedback_thanks", language), kind="system")]
            return
        if not understood:
            # A picture without words, or only invisible characters: nothing to understand,
            # but the patient deserves an answer.
            key = "attachment_received" if accepted.has_attachments else "rephrase"
            turn.replies = [_Reply(phrase(key, language))]
            turn.unanswered = key == "rephrase"
            return
        if conversation.safety_protocol:
            self._protocol_turn(turn, conversation.safety_protocol, understood, language)
            return
        try:
            with metrics.timed("rasa"):
                replies = await self._dialogue.respond(
                    conversation_id=conversation.id,
                    text=_dialogue_text(accepted.payload, understood),
                    metadata={"language": language, "channel": accepted.channel.value},
                )
        except DialogueUnavailable as exc:
            metrics.count_dependency_failure("rasa", "fallback_reply")
            log.warning(
                "dialogue unavailable, message kept for follow-up",
                extra={"conversation_id": conversation.id, "reason": str(exc)},
            )
            number = self._config.resources.emergency_number
            text = phrase("assistant_unavailable", language, emergency_number=number)
            turn.replies = [_Reply(text)]
            turn.status, turn.follow_up = "failed", True
            return
        turn.replies = []
        turn.unanswered = False
        for reply in replies:
            if reply.text:
                turn.replies.append(_Reply(reply.text, reply.buttons))
            if reply.custom and isinstance(reply.custom.get("triage"), dict):
                self._triage_decided(turn, reply.custom["triage"])
            if reply.custom and isinstance(reply.custom.get("escalate"), dict):
                # The patient accepted a staff follow-up (action_request_staff).
                turn.escalations.append(("normal", "request", (), None))
                turn.audits.append(("case.requested_by_patient", {}))
            if reply.custom and isinstance(reply.custom.get("knowledge_question"), dict):
                # The answer takes the place of the action's hand-over, in the dialogue's order.
                await self._answer_question(turn, understood, language, accepted.channel, stream)

    async def _answer_question(
        self,
        turn: _Turn,
        question: str,
        language: str,
        channel: Channel,
        stream: StreamSink | None,
    ) -> None:
        """The dialogue asked for a knowledge-base answer (action_answer_question)."""
        staff = (Button(_STAFF_BUTTON.get(language, _STAFF_BUTTON["en"]), "/request_human"),)
        if self._knowledge is None:
            turn.replies.append(_Reply(decline_text("weak_retrieval", language), staff))
            turn.unanswered = True
            return
        try:
            answer = await self._knowledge.answer(
                question,
                language=language,
                channel=channel.value,
                on_piece=stream.piece if stream else None,
                on_reset=stream.reset if stream else None,
            )
        except Exception as exc:
            # Still loading, or the index is unreadable: say so and offer a person.
            log.warning("knowledge-base answer failed", extra={"error": type(exc).__name__})
            metrics.count_dependency_failure("knowledge_base", "declined")
            if stream:
                await stream.reset()
            turn.replies.append(_Reply(decline_text("weak_retrieval", language), staff))
            turn.audits.append(("kb.failed", {"error": type(exc).__name__}))
            turn.unanswered = True
            return
        turn.unanswered = answer.declined is not None
        turn.replies.append(_Reply(answer.text, staff if answer.offer_staff else (), kind="answer"))
        turn.audits.append(("kb.answered", answer.audit()))

    def _protocol_turn(
        self, turn: _Turn, protocol: dict[str, Any], understood: str, language: str
    ) -> None:
        step = advance_protocol(protocol, understood, language, self._config.resources)
        turn.replies = [_Reply(text, kind="safety") for text in step.replies]
        turn.protocol = step.state
        turn.audits.append(
            (
                "safety.protocol_answer",
                {
                    "protocol": protocol["protocol"],
                    "answers": step.answers,
                    "imminent": step.imminent,
                    "finished": step.state is None,
                },
            )
        )
        if step.imminent:
            turn.escalations.append(("immediate", "crisis", ("CSSRS-SCREEN",), None))

    def _triage_decided(self, turn: _Turn, triage: dict[str, Any]) -> None:
        disposition = triage.get("disposition")
        if disposition not in ("emergency", "urgent", "routine", "self_care"):
            log.warning("ignoring a triage result without a known disposition")
            return
        metrics.TRIAGE_DISPOSITIONS.labels(disposition, "dialogue").inc()
        turn.triage = {
            "disposition": disposition,
            "reasons": [str(r) for r in triage.get("reasons", [])],
            "red_flags": [str(r) for r in triage.get("red_flags", [])],
            "rule_ids": [str(r) for r in triage.get("rule_ids", [])],
            "ruleset_version": str(triage.get("ruleset_version", "")),
            "summary": str(triage.get("summary", "")),
        }
        turn.audits.append(
            (
                "triage.decided",
                {k: turn.triage[k] for k in ("disposition", "rule_ids", "ruleset_version")},
            )
        )
        if disposition in ("emergency", "urgent"):
            # An urgent disposition needs a nurse's call today: staff see it as a case.
            priority = "immediate" if disposition == "emergency" else "high"
            turn.escalations.append(
                (priority, "triage", tuple(turn.triage["rule_ids"]), turn.triage["summary"])
            )

    async def request_staff(self, conversation_id: str, *, how: str) -> str | None:
        """The patient asked for staff outside the dialogue (a keypress on a call): open a
        case, or keep the active one. Returns the case id."""
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            return None
        await self._store.audit(
            actor="patient",
            action="case.requested_by_patient",
            conversation=conversation,
            detail={"how": how},
        )
        await self._escalate(conversation, "normal", "request", (), None)
        return await self._store.active_case(conversation_id)

    async def _escalate(
        self,
        conversation: ConversationInfo,
        priority: str,
        reason: str,
        rule_ids: tuple[str, ...],
        summary: str | None,
    ) -> None:
        case_id, changed = await self._store.escalate(
            conversation=conversation,
            priority=priority,
            reason=reason,
            rule_ids=rule_ids,
            summary=summary,
            deadlines=self._config.deadlines,
        )
        if changed:
            metrics.ESCALATIONS_OPENED.labels(priority, reason).inc()
        if changed and self._on_escalation:
            await self._on_escalation(case_id, priority)

    def _validate(self, inbound: Inbound, language: str) -> None:
        if is_blank(inbound.text) and not inbound.payload and not inbound.metadata.get("media"):
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
        return self._detected(understood, hint)

    def _detected(self, understood: str, hint: str) -> str:
        return detect_language(
            understood, supported=self._config.supported_languages, fallback=hint
        )


def _dialogue_text(payload: str | None, understood: str) -> str:
    # Rasa reads a leading "/" as an intent to force; only a button payload may do that.
    if payload and _INTENT_PAYLOAD.match(payload):
        return payload
    return understood.lstrip("/").strip() or understood


def _safety_audit(safety: SafetyAssessment) -> dict[str, Any]:
    return {
        "level": safety.level,
        "crisis": safety.crisis,
        "rule_ids": list(safety.rule_ids),
        "categories": list(safety.categories),
        "ruleset_version": safety.ruleset_version,
    }


def _triage_result(triage: dict[str, Any]) -> TriageResult:
    return TriageResult(
        disposition=triage["disposition"],
        reasons=tuple(triage.get("reasons", ())),
        red_flags=tuple(triage.get("red_flags", ())),
        rule_ids=tuple(triage.get("rule_ids", ())),
    )


def _state(conversation: ConversationInfo) -> ConversationState:
    triage = _triage_result(conversation.triage) if conversation.triage else None
    level = conversation.safety_level
    return ConversationState(
        mode="staff" if conversation.mode == "staff" else "bot",
        safety=SafetyAssessment(
            level=level if level in ("emergency", "crisis") else "none",  # type: ignore[arg-type]
            rule_ids=conversation.safety_rule_ids,
        ),
        triage=triage,
    )
