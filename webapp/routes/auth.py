"""Sign-in for the console and admin API: a username and password for a session token.

The token goes back in the response body and the console sends it as `Authorization: Bearer`;
no cookie is ever set, so another site cannot make a browser act with it (CSRF). Wrong
passwords and unknown usernames get the same answer after the same work (a dummy hash is
checked); `LOGIN_MAX_FAILURES` wrong passwords in a row lock the account for `LOGIN_LOCKOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.orm import AuditEvent, StaffUser, utcnow
from webapp.auth import (
    ROLES,
    Passwords,
    Principal,
    SessionAuthorizer,
    aware,
    error,
    normalize_username,
)

log = logging.getLogger(__name__)


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


def _user(principal: Principal) -> dict[str, str]:
    return {
        "username": principal.username,
        "display_name": principal.display_name,
        "role": principal.role,
    }


def build_router(
    *,
    sessions: async_sessionmaker[AsyncSession],
    authorize: SessionAuthorizer,
    passwords: Passwords,
    max_failures: int,
    lockout_s: int,
) -> APIRouter:
    router = APIRouter(prefix="/admin/api/v1/auth", tags=["auth"])

    def invalid() -> JSONResponse:
        return error(
            401,
            "invalid_credentials",
            "The username or password is wrong. Check both and try again.",
        )

    def locked(seconds: float) -> JSONResponse:
        wait = max(1, math.ceil(seconds))
        return error(
            429,
            "too_many_attempts",
            f"Too many wrong passwords: try again in {math.ceil(wait / 60)} minute(s), or ask "
            "an administrator to unlock the account.",
            **{"Retry-After": str(wait)},
        )

    async def refused(username: str, reason: str) -> None:
        log.info("sign-in refused", extra={"username": username, "reason": reason})
        async with sessions() as session, session.begin():
            session.add(
                AuditEvent(
                    actor="anonymous",
                    action="auth.login_failed",
                    detail={"username": username, "reason": reason},
                )
            )

    @router.post("/login")
    async def login(body: LoginIn) -> JSONResponse:
        username = normalize_username(body.username)[:64]
        now = utcnow()
        async with sessions() as session:
            user = await session.scalar(select(StaffUser).where(StaffUser.username == username))
        if user is None:
            await asyncio.to_thread(passwords.burn, body.password)
            await refused(username, "unknown_user")
            return invalid()
        if user.locked_until is not None and aware(user.locked_until) > now:
            await refused(username, "locked")
            return locked((aware(user.locked_until) - now).total_seconds())
        if not await asyncio.to_thread(passwords.verify, user.password_hash, body.password):
            async with sessions() as session, session.begin():
                # One UPDATE, so failures from several processes at once all count.
                failures = await session.scalar(
                    update(StaffUser)
                    .where(StaffUser.id == user.id)
                    .values(failed_logins=StaffUser.failed_logins + 1)
                    .returning(StaffUser.failed_logins)
                )
                lock = (failures or 0) >= max_failures
                if lock:
                    await session.execute(
                        update(StaffUser)
                        .where(StaffUser.id == user.id)
                        .values(failed_logins=0, locked_until=now + timedelta(seconds=lockout_s))
                    )
            await refused(username, "locked_now" if lock else "wrong_password")
            return locked(lockout_s) if lock else invalid()
        if not user.active:
            await refused(username, "disabled")
            return error(
                401,
                "account_disabled",
                "This account is disabled; ask an administrator to enable it.",
            )
        async with sessions() as session, session.begin():
            row = await session.get(StaffUser, user.id)
            if row is None or row.password_hash != user.password_hash or not row.active:
                # Changed while we checked the password: the new state wins.
                return invalid()
            row.failed_logins, row.locked_until, row.last_login_at = 0, None, now
            if passwords.needs_rehash(row.password_hash):
                row.password_hash = await asyncio.to_thread(passwords.hash, body.password)
            session.add(
                AuditEvent(
                    actor=f"user:{row.username}"[:64],
                    action="auth.login_succeeded",
                    detail={"username": row.username},
                )
            )
        authorize.forget(row.username)
        token, expires = authorize.tokens.issue(row, now)
        log.info("signed in", extra={"username": row.username, "role": row.role})
        return JSONResponse(
            content={
                "token": token,
                "expires_at": expires.isoformat(),
                "user": {
                    "username": row.username,
                    "display_name": row.display_name,
                    "role": row.role,
                },
            },
            headers={"Cache-Control": "no-store"},
        )

    @router.get("/me")
    async def me(request: Request) -> Any:
        who = await authorize(request, ROLES)
        return who if isinstance(who, JSONResponse) else _user(who)

    @router.post("/logout", status_code=204)
    async def logout(request: Request) -> Response:
        who = await authorize(request, ROLES)
        if isinstance(who, JSONResponse):
            return who
        async with sessions() as session, session.begin():
            if getattr(request.state, "auth_via", None) == "session":
                # Every session of the account ends, not only this one: the simple, safe
                # answer to "I signed in on a shared computer".
                await session.execute(
                    update(StaffUser)
                    .where(StaffUser.username == who.username)
                    .values(session_version=StaffUser.session_version + 1)
                )
            session.add(
                AuditEvent(actor=who.actor, action="auth.logout", detail={"username": who.username})
            )
        authorize.forget(who.username)
        log.info("signed out", extra={"username": who.username, "role": who.role})
        return Response(status_code=204)

    return router
