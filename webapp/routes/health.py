"""`/healthz`: the process is alive. `/readyz`: every dependency answers, with detail (and how
long each took to answer); a dependency that is not configured is not checked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[dict[str, Any]]]
CHECK_TIMEOUT_S = 3.0


async def _timed(check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        outcome = {"ok": True, **await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)}
    except Exception as exc:
        outcome = {"ok": False, "error": type(exc).__name__}
    return {**outcome, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def redis_check(client: Any) -> Check:
    """PING on a redis.asyncio client (rate limits, cooldowns, socket.io across workers)."""

    async def check() -> dict[str, Any]:
        await client.ping()
        return {}

    return check


def celery_broker_check(broker_url: str) -> Check:
    """The broker answers: a PING on Redis, a connection through kombu for any other."""
    if broker_url.startswith(("redis://", "rediss://")):

        async def ping_redis() -> dict[str, Any]:
            import redis.asyncio as aioredis

            client = aioredis.from_url(broker_url, socket_connect_timeout=2.0, socket_timeout=2.0)
            try:
                await client.ping()
            finally:
                await client.aclose()
            return {"transport": "redis"}

        return ping_redis

    async def connect() -> dict[str, Any]:
        from kombu.connection import Connection

        def attempt() -> str:
            with Connection(broker_url, connect_timeout=2.0) as connection:  # type: ignore[no-untyped-call]
                connection.ensure_connection(max_retries=1)
                return str(connection.transport_cls)

        return {"transport": await asyncio.to_thread(attempt)}

    return connect


def http_check(client: httpx.AsyncClient, *urls: str) -> Check:
    """A GET that must answer 2xx; the first URL that does not answer 404 decides (so one check
    covers two API versions, as Chroma's /api/v1 and /api/v2 heartbeats)."""

    async def check() -> dict[str, Any]:
        for index, url in enumerate(urls):
            response = await client.get(url, timeout=2.0)
            if response.status_code == 404 and index < len(urls) - 1:
                continue
            response.raise_for_status()
            return {}
        return {}

    return check


def build_router(checks: dict[str, Check]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        names = list(checks)
        outcomes = await asyncio.gather(*(_timed(checks[n]) for n in names))
        detail: dict[str, Any] = dict(zip(names, outcomes, strict=True))
        ready = all(d["ok"] for d in detail.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not_ready", "checks": detail},
        )

    return router
