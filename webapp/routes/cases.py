"""The staff console's case API (the console page is /console): list cases, read one with its
transcript, claim, reply to the patient, hand back to the bot, resolve.

It is the embedded default's staff tool and works beside Mattermost too: both go through the
same `CaseService`. Staff sign in with the admin token and say who they are (`X-Staff-Name`,
optional `X-Staff-Role`); the name is what the audit log records for each action.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from escalation.cases import CaseError, CaseService, Staff, shown_as

_STATUS = {
    "not_found": 404,
    "claimed": 409,
    "closed": 409,
    "not_claimed": 409,
    "empty": 422,
    "too_long": 422,
}


class ReplyIn(BaseModel):
    text: str = Field(max_length=4000)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def build_router(
    *,
    cases: CaseService,
    admin_token: str | None,
    staff_display: str,
    clinic_name: str,
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1/cases", tags=["cases"])

    def who(request: Request) -> Staff | JSONResponse:
        if not admin_token:
            return _error(503, "admin_disabled", "Set ADMIN_TOKEN to use the staff console.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), admin_token.encode()
        ):
            return _error(401, "unauthorized", "Sign in with the admin token.")
        name = " ".join(request.headers.get("x-staff-name", "").split())
        if not 0 < len(name) <= 80:
            return _error(401, "staff_name_required", "Say who you are (your name) to sign in.")
        role = " ".join(request.headers.get("x-staff-role", "").split())[:40]
        return Staff(
            id=f"console:{name}"[:64],
            name=name,
            shown_as=shown_as(
                staff_display, first_name=name.split(" ")[0], role=role, clinic=clinic_name
            ),
        )

    async def run(
        request: Request, work: Callable[[Staff], Awaitable[dict[str, Any]]]
    ) -> JSONResponse | dict[str, Any]:
        """Who is asking, then the work, with a refused action as a clear 4xx."""
        staff = who(request)
        if isinstance(staff, JSONResponse):
            return staff
        try:
            return await work(staff)
        except CaseError as exc:
            return _error(_STATUS.get(exc.code, 409), exc.code, exc.message)

    @router.get("")
    async def list_cases(request: Request, status: str = "active") -> Any:
        async def work(_: Staff) -> dict[str, Any]:
            views = await cases.list_cases(active_only=status != "all")
            return {"cases": [v.as_dict() for v in views]}

        return await run(request, work)

    @router.get("/{case_id}")
    async def get_case(case_id: str, request: Request) -> Any:
        async def work(staff: Staff) -> dict[str, Any]:
            view, messages = await cases.transcript(case_id, staff=staff)
            return {"case": view.as_dict(), "messages": messages}

        return await run(request, work)

    @router.post("/{case_id}/reply")
    async def reply(case_id: str, body: ReplyIn, request: Request) -> Any:
        async def work(staff: Staff) -> dict[str, Any]:
            outcome = await cases.reply(case_id, staff, body.text)
            message = outcome.message.as_dict() if outcome.message else None
            if message is not None:
                message["status"] = outcome.delivery
            return {"message": message, "delivery": outcome.delivery, "notice": outcome.notice}

        return await run(request, work)

    changes = {"claim": cases.claim, "handback": cases.hand_back, "resolve": cases.resolve}

    @router.post("/{case_id}/{action}")
    async def change(
        case_id: str, action: Literal["claim", "handback", "resolve"], request: Request
    ) -> Any:
        async def work(staff: Staff) -> dict[str, Any]:
            return {"case": (await changes[action](case_id, staff)).as_dict()}

        return await run(request, work)

    return router
