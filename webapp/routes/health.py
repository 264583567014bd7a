"""`/healthz`: the process is alive. `/readyz`: every dependency answers, with detail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[dict[str, Any]]]


def build_router(checks: dict[str, Check]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        names = list(checks)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(checks[n](), timeout=3.0) for n in names), return_exceptions=True
        )
        detail: dict[str, Any] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                detail[name] = {"ok": False, "error": type(outcome).__name__}
            else:
                detail[name] = {"ok": True, **outcome}
        ready = all(d["ok"] for d in detail.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not_ready", "checks": detail},
        )

    return router
