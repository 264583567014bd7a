"""`/metrics`: the platform's Prometheus metrics (core/metrics.py), with the queue depths read at
scrape time. With METRICS_TOKEN set the scraper must send `Authorization: Bearer <token>`."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core import metrics


def build_router(*, token: str | None, queue_depth: metrics.QueueDepthSource | None) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if token:
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                sent.encode(), token.encode()
            ):
                return JSONResponse(
                    status_code=401,
                    content={
                        "error": {
                            "code": "unauthorized",
                            "message": "Send 'Authorization: Bearer <METRICS_TOKEN>' "
                            "(set bearer_token in the Prometheus scrape config).",
                        }
                    },
                    headers={"WWW-Authenticate": "Bearer"},
                )
        extra = await queue_depth() if queue_depth else []
        # Reading every worker's file (multiprocess mode) is file I/O: off the event loop.
        body = await asyncio.to_thread(metrics.exposition, extra)
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)

    return router
