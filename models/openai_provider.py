"""OpenAI (or an OpenAI-compatible server) through the official SDK's Chat Completions API.

One attempt per call: the SDK's own retries are off (`max_retries=0`) because the router owns
retries, fallback and cooldown. Every failure leaves as a classified `ProviderError`.

`Prompt.max_tokens` travels as `max_completion_tokens`: the API has deprecated `max_tokens` in its
favour and reasoning models reject the old name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from models.base import Prompt, ProviderError
from models.streaming import retry_after_seconds, status_kind, until_deadline

NAME = "openai"


def _messages(prompt: Prompt) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user_content()},
    ]


class OpenAIProvider:
    name = NAME
    cloud = True

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None) -> None:
        self.model = model
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
        self._reported_model: str | None = None

    @property
    def version(self) -> str:
        """The dated model id the server says answered (e.g. "gpt-4o-mini-2024-07-18"): an
        alias like "gpt-4o-mini" moves over time, the audit needs what actually ran."""
        return self._reported_model or self.model

    async def stream(self, prompt: Prompt, *, timeout_s: float) -> AsyncIterator[str]:
        # One deadline for the whole attempt (see until_deadline), beside the SDK's per-read one.
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                chunks = await self._client.chat.completions.create(
                    model=self.model,
                    messages=_messages(prompt),
                    max_completion_tokens=prompt.max_tokens,
                    temperature=prompt.temperature,
                    stream=True,
                    timeout=timeout_s,
                )
            async with aclosing(until_deadline(chunks, deadline)) as items:
                async for chunk in items:
                    if chunk.model:
                        self._reported_model = chunk.model
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield choice.delta.content
        except (openai.OpenAIError, httpx2.HTTPError, TimeoutError) as exc:
            raise _classify(exc) from exc

    async def complete(self, prompt: Prompt, timeout_s: float) -> str:
        """The whole answer in one response, for callers that do not want streaming."""
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.chat.completions.create(
                    model=self.model,
                    messages=_messages(prompt),
                    max_completion_tokens=prompt.max_tokens,
                    temperature=prompt.temperature,
                    timeout=timeout_s,
                )
        except (openai.OpenAIError, httpx2.HTTPError, TimeoutError) as exc:
            raise _classify(exc) from exc
        if response.model:
            self._reported_model = response.model
        if not response.choices:
            raise ProviderError(NAME, "server", "response without choices")
        return response.choices[0].message.content or ""

    async def aclose(self) -> None:
        await self._client.close()


def _classify(exc: BaseException) -> ProviderError:
    # APITimeoutError subclasses APIConnectionError, so timeouts are checked first. Transport
    # errors of httpx2 (the SDKs' HTTP client) can surface unwrapped while a stream is read.
    if isinstance(exc, TimeoutError | openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(NAME, "timeout", str(exc) or "no answer in time")
    if isinstance(exc, openai.APIStatusError):
        return ProviderError(
            NAME,
            status_kind(exc.status_code),
            f"HTTP {exc.status_code}: {exc.message}",
            retry_after_s=retry_after_seconds(exc.response.headers),
        )
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ProviderError(NAME, "unavailable", str(exc))
    # What is left: an error event inside a 200 stream, or a response the SDK could not read.
    return ProviderError(NAME, "server", str(exc))
