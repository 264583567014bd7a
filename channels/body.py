"""Reading a request body with a size limit, for every channel's webhooks and APIs."""

from __future__ import annotations

from fastapi import Request


async def read_limited(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None when it is over `max_bytes` (declared or actually sent): a huge body
    is refused without being held in memory."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
