"""What the Mattermost server calls on us: case-card buttons (interactive message actions), the
`/case` slash command, and outgoing webhooks (an optional second path for staff posts).

Each request is checked before anything happens: a button press must carry the HMAC we put
in the card's context; a slash command or outgoing webhook must carry the token Mattermost
generated for it (MATTERMOST_SLASH_TOKEN, MATTERMOST_OUTGOING_TOKEN). A forged request gets a
403 and a log line, and changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from escalation.card import verify
from escalation.cases import CaseError, CaseService, CaseView, Staff
from escalation.listener import StaffDirectory, StaffPosts

log = logging.getLogger(__name__)

ACTIONS_PATH = "/escalation/mattermost/actions"
COMMAND_PATH = "/escalation/mattermost/command"
OUTGOING_PATH = "/escalation/mattermost/outgoing"
MAX_BODY = 64 * 1024
COMMAND_HELP = (
    "Use /case in a case channel: `/case claim`, `/case reply your message`, `/case handback`, "
    "`/case resolve`, `/case status`."
)


def _token_ok(given: Any, expected: str | None) -> bool:
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _refused(why: str) -> JSONResponse:
    log.warning("refused a Mattermost integration request", extra={"reason": why})
    return JSONResponse(status_code=403, content={"error": {"code": "forbidden", "message": why}})


def _status_line(case: CaseView) -> str:
    holder = f", claimed by {case.claimed_by}" if case.claimed_by else ""
    return f"Case {case.id[:8]}: {case.priority} ({case.reason}), {case.status}{holder}."


async def _body(request: Request) -> bytes | None:
    body = await request.body()
    return body if len(body) <= MAX_BODY else None


async def act(cases: CaseService, case_id: str, action: str, staff: Staff, text: str = "") -> str:
    """One staff action by name; the answer is shown to that staff member only."""
    if action == "claim":
        case = await cases.claim(case_id, staff)
        return f"You have case {case.id[:8]}. Your posts in this channel now go to the patient."
    if action == "handback":
        await cases.hand_back(case_id, staff)
        return "The assistant has the conversation again."
    if action == "resolve":
        await cases.resolve(case_id, staff)
        return "Resolved. The patient was asked for feedback."
    if action == "reply":
        outcome = await cases.reply(case_id, staff, text)
        return outcome.notice or f"Sent to the patient ({outcome.delivery})."
    if action == "status":
        return _status_line(await cases.get(case_id))
    return COMMAND_HELP


def build_router(
    *,
    cases: CaseService,
    directory: StaffDirectory,
    posts: StaffPosts,
    secret: bytes,
    slash_token: str | None,
    outgoing_token: str | None,
) -> APIRouter:
    router = APIRouter(tags=["mattermost"])

    @router.post(ACTIONS_PATH)
    async def button(request: Request) -> JSONResponse:
        body = await _body(request)
        try:
            payload = json.loads(body or b"")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return JSONResponse(
                status_code=400,
                content={"error": {"code": "invalid", "message": "Expected a JSON object."}},
            )
        verified = verify(secret, payload.get("context"))
        user_id = payload.get("user_id")
        if verified is None or not isinstance(user_id, str) or not user_id:
            return _refused("button context not signed by this server")
        case_id, action = verified
        staff = await directory.staff(user_id)
        try:
            text = await act(cases, case_id, action, staff)
        except CaseError as exc:
            text = exc.message
        return JSONResponse({"ephemeral_text": text})

    @router.post(COMMAND_PATH)
    async def command(request: Request) -> JSONResponse:
        body = await _body(request)
        try:
            form = dict(parse_qsl((body or b"").decode("utf-8"), strict_parsing=False))
        except UnicodeDecodeError:
            form = {}
        if not _token_ok(form.get("token"), slash_token):
            return _refused("slash command token does not match")
        words = form.get("text", "").strip()
        verb, _, rest = words.partition(" ")
        verb = {"hand": "handback", "hand-back": "handback", "close": "resolve"}.get(
            verb.lower(), verb.lower()
        )
        case = await cases.by_staff_channel(form.get("channel_id", ""))
        if case is None or verb not in ("claim", "handback", "resolve", "reply", "status"):
            text = COMMAND_HELP
        else:
            staff = await directory.staff(form.get("user_id", ""))
            try:
                text = await act(cases, case.id, verb, staff, rest)
            except CaseError as exc:
                text = exc.message
        return JSONResponse({"response_type": "ephemeral", "text": text})

    @router.post(OUTGOING_PATH)
    async def outgoing(request: Request) -> JSONResponse:
        body = await _body(request) or b""
        payload: dict[str, Any]
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                loaded = json.loads(body)
            except ValueError:
                loaded = None
            payload = loaded if isinstance(loaded, dict) else {}
        else:
            try:
                payload = dict(parse_qsl(body.decode("utf-8")))
            except UnicodeDecodeError:
                payload = {}
        if not _token_ok(payload.get("token"), outgoing_token):
            return _refused("outgoing webhook token does not match")
        file_ids = payload.get("file_ids") or []
        if isinstance(file_ids, str):
            file_ids = [f for f in file_ids.split(",") if f]
        post = {
            "id": payload.get("post_id"),
            "user_id": payload.get("user_id"),
            "channel_id": payload.get("channel_id"),
            "message": payload.get("text", ""),
            "create_at": payload.get("timestamp") or 0,
            "file_ids": file_ids,
        }
        result = await posts.handle(post)
        log.info("outgoing webhook handled", extra={"result": result})
        # An empty answer: Mattermost posts nothing back into the channel.
        return JSONResponse({})

    return router
