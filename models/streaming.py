"""What the cloud providers share: reading an SDK's event stream against one deadline, and
reading an HTTP error the way the router needs it."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from models.base import ErrorKind

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _ClosableStream(Protocol[T_co]):
    def __aiter__(self) -> AsyncIterator[T_co]: ...

    async def close(self) -> Any: ...


async def until_deadline(stream: _ClosableStream[T], deadline: float) -> AsyncGenerator[T, None]:
    """The stream's items while the loop clock is before `deadline` (TimeoutError after).

    The SDK's own `timeout` bounds each network read; the deadline bounds the whole attempt, so
    a server that trickles a token every few seconds still times out. The deadline wraps each
    wait for the next item only, never a `yield`: a timeout scope open across a yield would
    cancel whatever the consumer happens to be doing. The stream is closed at the end, also when
    the consumer stops early (use it under `contextlib.aclosing`, so that happens at once), so
    the connection goes back to the pool."""
    items = stream.__aiter__()
    try:
        while True:
            async with asyncio.timeout_at(deadline):
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        await stream.close()


def status_kind(status: int) -> ErrorKind:
    """An HTTP error status as the router sees it. 408 and 409 are retryable, as both vendors'
    SDKs treat them; any other 4xx means this request will fail the same way again."""
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "bad_request"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's wait hint: `retry-after-ms` (OpenAI's finer one) or `Retry-After` as
    seconds or an HTTP date. None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
