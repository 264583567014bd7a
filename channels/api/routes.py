"""`POST /api/v1/messages`: one patient message in, the assistant's replies and the
conversation's state out. The same `sender_id` continues the same conversation."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from bot.clinical.engine import ClinicalEngine
from bot.contract import Channel, Inbound, TurnResult
from bot.language import detect_language
from bot.orchestrator import InvalidMessage, Orchestrator, RateLimited
from bot.store import ConversationStore
from bot.text import normalize_for_understanding
from channels.body import read_limited
from core import metrics

log = logging.getLogger(__name__)
_Body = TypeVar("_Body", bound=BaseModel)


class TriageIn(BaseModel):
    text: Annotated[str, Field(min_length=1)]
    age: Annotated[int | None, Field(ge=0, le=130)] = None
    sex: Annotated[str | None, Field(max_length=16)] = None
    language: Annotated[str | None, Field(max_length=16)] = None


class MessageIn(BaseModel):
    sender_id: Annotated[str, Field(min_length=1, max_length=128)]
    text: str
    language: Annotated[str | None, Field(max_length=16)] = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message}}, headers=headers
    )


def turn_response(result: TurnResult) -> dict[str, Any]:
    state = result.state
    return {
        "conversation_id": result.conversation_id,
        "replies": [
            {
                "text": r.text,
                "buttons": [{"title": b.title, "payload": b.payload} for b in r.buttons],
            }
            for r in result.replies
        ],
        "state": {
            "mode": state.mode,
            "safety": {"level": state.safety.level, "rule_ids": list(state.safety.rule_ids)},
            "triage": None
            if state.triage is None
            else {
                "disposition": state.triage.disposition,
                "reasons": list(state.triage.reasons),
                "red_flags": list(state.triage.red_flags),
                "rule_ids": list(state.triage.rule_ids),
            },
        },
    }


def build_router(
    *,
    orchestrator: Orchestrator,
    engine: ClinicalEngine,
    store: ConversationStore,
    api_token: str | None,
    max_bytes: int,
    max_chars: int,
    supported_languages: list[str],
    default_language: str,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["api channel"])

    async def read_json(
        request: Request, authorization: str | None, model: type[_Body]
    ) -> _Body | JSONResponse:
        if not api_token:
            return _error(503, "api_disabled", "The API is disabled: set API_TOKEN.")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), api_token.encode()
        ):
            return _error(
                401,
                "unauthorized",
                "Send 'Authorization: Bearer <API_TOKEN>'.",
                **{"WWW-Authenticate": "Bearer"},
            )
        body = await read_limited(request, max_bytes)
        if body is None:
            return _error(413, "too_large", f"Request body over {max_bytes} bytes.")
        try:
            payload = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(400, "invalid_encoding", "The request body must be UTF-8 encoded JSON.")
        except json.JSONDecodeError as exc:
            return _error(400, "invalid_json", f"The request body is not valid JSON: {exc.msg}.")
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors())
            return _error(422, "invalid_request", f"Invalid or missing field(s): {fields}.")

    @router.post("/triage")
    async def post_triage(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        """Single-shot assessment of a whole description; nothing about the patient is stored,
        the decision (rule ids, version) is audited."""
        parsed = await read_json(request, authorization, TriageIn)
        if isinstance(parsed, JSONResponse):
            return parsed
        text = normalize_for_understanding(parsed.text)
        if not text:
            return _error(422, "empty", "Describe the symptoms in 'text'.")
        if len(parsed.text) > max_chars:
            return _error(413, "too_long", f"'text' is over {max_chars} characters.")
        language = (parsed.language or "").lower()[:2]
        if language not in supported_languages:
            language = detect_language(
                text, supported=supported_languages, fallback=default_language
            )
        decision = engine.assess(text, language=language, age_years=parsed.age, sex=parsed.sex)
        metrics.TRIAGE_DISPOSITIONS.labels(decision.disposition, "api").inc()
        await store.audit(
            actor="api",
            action="triage.assessed",
            detail={
                "disposition": decision.disposition,
                "rule_ids": list(decision.rule_ids),
                "safety_level": decision.safety_level,
                "safety_rule_ids": list(decision.safety_rule_ids),
                "ruleset_version": decision.ruleset_version,
            },
        )
        labels = engine.ruleset.findings
        return JSONResponse(
            {
                "disposition": decision.disposition,
                "reasons": list(decision.reasons),
                "red_flags": [
                    labels[f].label.get(language) or labels[f].label.get("en", f)
                    for f in decision.red_flags
                ],
                "rule_ids": list(decision.rule_ids),
                "safety": {
                    "level": decision.safety_level,
                    "rule_ids": list(decision.safety_rule_ids),
                },
                "language": language,
                "ruleset_version": decision.ruleset_version,
            }
        )

    @router.post("/messages")
    async def post_message(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> JSONResponse:
        parsed = await read_json(request, authorization, MessageIn)
        if isinstance(parsed, JSONResponse):
            return parsed
        message = parsed
        inbound = Inbound(
            channel=Channel.API,
            sender_address=message.sender_id,
            text=message.text,
            language=message.language,
            vendor_message_id=idempotency_key,
            metadata=message.metadata,
        )
        try:
            result = await orchestrator.handle(inbound)
        except RateLimited as exc:
            return _error(429, exc.code, exc.message, **{"Retry-After": str(exc.retry_after_s)})
        except InvalidMessage as exc:
            status = 413 if exc.code == "too_long" else 422
            return _error(status, exc.code, exc.message)
        return JSONResponse(turn_response(result))

    return router
