"""Who is calling the admin API, and may they.

Every admin router receives one `Authorizer` and calls it first:

    who = await authorize(request, {"admin", "auditor"})
    if isinstance(who, JSONResponse):
        return who

Roles: `admin` (everything), `staff` (cases, transcripts, the knowledge base), `auditor`
(read-only: transcripts, cases, the audit log, the dashboard). The break-glass `ADMIN_TOKEN`
acts as an admin, for scripts and first set-up.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse

Role = Literal["admin", "staff", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "staff", "auditor")


@dataclass(frozen=True)
class Principal:
    username: str
    display_name: str
    role: Role
    via: Literal["session", "admin_token"] = "session"

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"user:{self.username}"[:64]


class Authorizer(Protocol):
    async def __call__(
        self, request: Request, roles: Collection[Role]
    ) -> Principal | JSONResponse: ...


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message}}, headers=headers
    )


class TokenAuthorizer:
    """The break-glass admin token only (sessions come on top of it)."""

    def __init__(self, admin_token: str | None) -> None:
        self._admin_token = admin_token

    async def __call__(self, request: Request, roles: Collection[Role]) -> Principal | JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if (
            self._admin_token
            and scheme.lower() == "bearer"
            and secrets.compare_digest(token.encode(), self._admin_token.encode())
        ):
            if "admin" not in roles:
                return error(403, "forbidden", "Your role cannot do this.")
            return Principal("admin-token", "Administrator", "admin", via="admin_token")
        return error(401, "unauthorized", "Sign in first.", **{"WWW-Authenticate": "Bearer"})
