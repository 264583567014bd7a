"""Anthropic through the official SDK's Messages API.

One attempt per call: the SDK's own retries are off (`max_retries=0`) because the router owns
retries, fallback and cooldown. Every failure leaves as a classified `ProviderError`.

`Prompt.temperature` is not sent: the SDK's `messages.create` (anthropic 2.x) has no sampling
temperature parameter any more, so the model's default applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import anthropic
import httpx2
from anthropic.types import RawContentBlockDeltaEvent, RawMessageStartEvent, TextBlock, TextDelta

from models.base import Prompt, ProviderError
from models.streaming import retry_after_seconds, status_kind, until_deadline

NAME = "anthropic"


class AnthropicProvider:
    name = NAME
    cloud = True

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None) -> None:
        self.model = model
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0)
        self._reported_model: str | None = None

    @property
    def version(self) -> str:
        """The model id the server says answered (from `message_start` or the response): an
        alias like "claude-3-5-haiku-latest" moves over time, the audit needs what ran."""
        return self._reported_model or self.model

    async def stream(self, prompt: Prompt, *, timeout_s: float) -> AsyncIterator[str]:
        # One deadline for the whole attempt (see until_deadline), beside the SDK's per-read one.
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                events = await self._client.messages.create(
                    model=self.model,
                    system=prompt.system,
                    messages=[{"role": "user", "content": prompt.user_content()}],
                    max_tokens=prompt.max_tokens,
                    stream=True,
                    timeout=timeout_s,
                )
            async with aclosing(until_deadline(events, deadline)) as items:
                async for event in items:
                    if isinstance(event, RawMessageStartEvent):
                        self._reported_model = event.message.model
                    elif (
                        isinstance(event, RawContentBlockDeltaEvent)
                        and isinstance(event.delta, TextDelta)
                        and event.delta.text
                    ):
                        yield event.delta.text
        except (anthropic.AnthropicError, httpx2.HTTPError, TimeoutError) as exc:
            raise _classify(exc) from exc

    async def complete(self, prompt: Prompt, timeout_s: float) -> str:
        """The whole answer in one response, for callers that do not want streaming."""
        try:
            async with asyncio.timeout(timeout_s):
                message = await self._client.messages.create(
                    model=self.model,
                    system=prompt.system,
                    messages=[{"role": "user", "content": prompt.user_content()}],
                    max_tokens=prompt.max_tokens,
                    timeout=timeout_s,
                )
        except (anthropic.AnthropicError, httpx2.HTTPError, TimeoutError) as exc:
            raise _classify(exc) from exc
        if message.model:
            self._reported_model = message.model
        return "".join(block.text for block in message.content if isinstance(block, TextBlock))

    async def aclose(self) -> None:
        await self._client.close()


def _classify(exc: BaseException) -> ProviderError:
    # APITimeoutError subclasses APIConnectionError, so timeouts are checked first. Transport
    # errors of httpx2 (the SDKs' HTTP client) can surface unwrapped while a stream is read.
    if isinstance(exc, TimeoutError | anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(NAME, "timeout", str(exc) or "no answer in time")
    if isinstance(exc, anthropic.APIStatusError):
        # An `event: error` inside a 200 stream (e.g. overloaded_error) arrives as a status
        # error carrying the stream's 200: the server failed mid-answer.
        kind = status_kind(exc.status_code) if exc.status_code >= 400 else "server"
        return ProviderError(
            NAME,
            kind,
            f"HTTP {exc.status_code}: {exc.message}",
            retry_after_s=retry_after_seconds(exc.response.headers),
        )
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ProviderError(NAME, "unavailable", str(exc))
    return ProviderError(NAME, "server", str(exc))
