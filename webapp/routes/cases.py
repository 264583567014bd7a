"""The staff console's case API (the console page is /console): list cases, read one with its
transcript, claim, reply to the patient, hand back to the bot, resolve.

It is the embedded default's staff tool and works beside Mattermost too: both go through the
same `CaseService`. Staff sign in (webapp/auth.py); their account's display name is what the
audit log records for each action and its first name what the patient sees. Admins, staff and
auditors read cases; only admins and staff act on them. Scripts using the break-glass admin
token say who they are (`X-Staff-Name`, optional `X-Staff-Role`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from escalation.cases import CaseError, CaseService, Staff, shown_as
from webapp.auth import Authorizer, Role, error

READERS: frozenset[Role] = frozenset({"admin", "staff", "auditor"})
WORKERS: frozenset[Role] = frozenset({"admin", "staff"})

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


def build_router(
    *,
    cases: CaseService,
    authorize: Authorizer,
    staff_display: str,
    clinic_name: str,
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1/cases", tags=["cases"])

    async def who(request: Request, roles: Collection[Role]) -> Staff | JSONResponse:
        principal = await authorize(request, roles)
        if isinstance(principal, JSONResponse):
            return principal
        # A title the person gives (Nurse, Front desk) is how patients see them; else the role.
        title = " ".join(request.headers.get("x-staff-role", "").split())[:40]
        if principal.via == "admin_token":
            # The shared token names nobody: the caller says who they are.
            name = " ".join(request.headers.get("x-staff-name", "").split())
            if not 0 < len(name) <= 80:
                return error(401, "staff_name_required", "Say who you are (your name) to sign in.")
            staff_id = f"console:{name}"[:64]
        else:
            name = principal.display_name
            staff_id = f"user:{principal.username}"[:64]
            title = title or principal.role.capitalize()
        return Staff(
            id=staff_id,
            name=name,
            shown_as=shown_as(
                staff_display, first_name=name.split(" ")[0], role=title, clinic=clinic_name
            ),
        )

    async def run(
        request: Request,
        work: Callable[[Staff], Awaitable[dict[str, Any]]],
        roles: Collection[Role] = WORKERS,
    ) -> JSONResponse | dict[str, Any]:
        """Who is asking, then the work, with a refused action as a clear 4xx."""
        staff = await who(request, roles)
        if isinstance(staff, JSONResponse):
            return staff
        try:
            return await work(staff)
        except CaseError as exc:
            return error(_STATUS.get(exc.code, 409), exc.code, exc.message)

    @router.get("")
    async def list_cases(request: Request, status: str = "active") -> Any:
        async def work(_: Staff) -> dict[str, Any]:
            views = await cases.list_cases(active_only=status != "all")
            return {"cases": [v.as_dict() for v in views]}

        return await run(request, work, READERS)

    @router.get("/{case_id}")
    async def get_case(case_id: str, request: Request) -> Any:
        async def work(staff: Staff) -> dict[str, Any]:
            view, messages = await cases.transcript(case_id, staff=staff)
            return {"case": view.as_dict(), "messages": messages}

        return await run(request, work, READERS)

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
