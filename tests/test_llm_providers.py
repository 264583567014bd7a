"""The cloud providers through the official SDKs, against local servers that speak the vendors'
wire formats: what reaches the server, what comes back, and how each failure is classified."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from models.anthropic_provider import AnthropicProvider
from models.base import Prompt, Provider, ProviderError, Source
from models.openai_provider import OpenAIProvider
from tests.fakes.llm_servers import Answer, Fail, FakeAnthropic, FakeOpenAI

ANSWER = "The clinic opens at 8:00 on weekdays [1]. Bring your insurance card."
PROMPT = Prompt(
    system="You are the clinic's assistant. Answer only from the sources.",
    question="When does the clinic open?",
    sources=(Source(1, "Opening hours", "kb/hours.md", "Weekdays 8:00-18:00."),),
    max_tokens=200,
    temperature=0.1,
)
OPENAI_SERVED = "gpt-4o-mini-2024-07-18"
ANTHROPIC_SERVED = "claude-haiku-4-5-20251001"
# A hang far longer than any timeout used here: a test that waits it out has failed.
HANG_S = 30.0


@dataclass
class Vendor:
    fake: FakeOpenAI | FakeAnthropic
    provider: OpenAIProvider | AnthropicProvider
    served_model: str


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default_text=ANSWER, served_model=OPENAI_SERVED) as fake:
        yield fake


@pytest.fixture
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(default_text=ANSWER, served_model=ANTHROPIC_SERVED) as fake:
        yield fake


@pytest.fixture
async def openai_provider(openai_fake: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(api_key="sk-test", model="gpt-4o-mini", base_url=openai_fake.base_url)
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic_provider(anthropic_fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        api_key="sk-ant-test", model="claude-haiku-4-5", base_url=anthropic_fake.base_url
    )
    yield provider
    await provider.aclose()


@pytest.fixture(params=["openai", "anthropic"])
def vendor(request: pytest.FixtureRequest) -> Vendor:
    if request.param == "openai":
        fake = request.getfixturevalue("openai_fake")
        return Vendor(fake, request.getfixturevalue("openai_provider"), OPENAI_SERVED)
    fake = request.getfixturevalue("anthropic_fake")
    return Vendor(fake, request.getfixturevalue("anthropic_provider"), ANTHROPIC_SERVED)


async def collect(provider: OpenAIProvider | AnthropicProvider, timeout_s: float = 10) -> list[str]:
    return [piece async for piece in provider.stream(PROMPT, timeout_s=timeout_s)]


def test_both_are_cloud_providers(
    openai_provider: OpenAIProvider, anthropic_provider: AnthropicProvider
) -> None:
    providers: list[Provider] = [openai_provider, anthropic_provider]  # mypy checks the protocol
    assert [(p.name, p.cloud) for p in providers] == [("openai", True), ("anthropic", True)]


# -- answers ---------------------------------------------------------------------------------


async def test_stream_arrives_in_pieces_that_join_to_the_answer(vendor: Vendor) -> None:
    pieces = await collect(vendor.provider)
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER


async def test_complete_returns_the_whole_answer(vendor: Vendor) -> None:
    assert await vendor.provider.complete(PROMPT, 10) == ANSWER
    assert len(vendor.fake.requests) == 1


async def test_version_is_the_model_the_server_reported(vendor: Vendor) -> None:
    assert vendor.provider.version == vendor.provider.model  # nothing reported yet
    await collect(vendor.provider)
    assert vendor.provider.version == vendor.served_model
    vendor.fake.script(Answer(model=f"{vendor.served_model}-next"))
    await vendor.provider.complete(PROMPT, 10)
    assert vendor.provider.version == f"{vendor.served_model}-next"


async def test_echo_shows_the_user_content_reached_the_server(vendor: Vendor) -> None:
    vendor.fake.default = Answer(echo=True)
    assert "".join(await collect(vendor.provider)) == PROMPT.user_content()
    assert await vendor.provider.complete(PROMPT, 10) == PROMPT.user_content()


async def test_stopping_early_frees_the_connection(vendor: Vendor) -> None:
    stream = vendor.provider.stream(PROMPT, timeout_s=10)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert "".join(await collect(vendor.provider)) == ANSWER


# -- the request on the wire -------------------------------------------------------------------


async def test_openai_request_fields(
    openai_fake: FakeOpenAI, openai_provider: OpenAIProvider
) -> None:
    await collect(openai_provider)
    await openai_provider.complete(PROMPT, 10)
    streamed, whole = openai_fake.requests
    for request in (streamed, whole):
        assert request.method == "POST"
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        assert request.body["model"] == "gpt-4o-mini"
        assert request.body["messages"] == [
            {"role": "system", "content": PROMPT.system},
            {"role": "user", "content": PROMPT.user_content()},
        ]
        assert request.body["max_completion_tokens"] == PROMPT.max_tokens
        assert request.body["temperature"] == PROMPT.temperature
    assert streamed.body["stream"] is True
    assert not whole.body.get("stream")


async def test_anthropic_request_fields(
    anthropic_fake: FakeAnthropic, anthropic_provider: AnthropicProvider
) -> None:
    await collect(anthropic_provider)
    await anthropic_provider.complete(PROMPT, 10)
    streamed, whole = anthropic_fake.requests
    for request in (streamed, whole):
        assert request.method == "POST"
        assert request.path == "/v1/messages"
        # Older SDKs send `x-api-key` (as the docs say), the current one a Bearer token.
        assert "sk-ant-test" in (
            request.headers.get("x-api-key"),
            request.headers.get("authorization", "").removeprefix("Bearer "),
        )
        assert request.headers["anthropic-version"]
        assert request.body["model"] == "claude-haiku-4-5"
        assert request.body["system"] == PROMPT.system
        assert request.body["messages"] == [{"role": "user", "content": PROMPT.user_content()}]
        assert request.body["max_tokens"] == PROMPT.max_tokens
    assert streamed.body["stream"] is True
    assert not whole.body.get("stream")


# -- failures ----------------------------------------------------------------------------------


async def failure(vendor: Vendor, *, stream: bool, timeout_s: float = 10) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        if stream:
            await collect(vendor.provider, timeout_s)
        else:
            await vendor.provider.complete(PROMPT, timeout_s)
    assert caught.value.provider == vendor.provider.name
    return caught.value


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
async def test_429_is_rate_limited_with_the_servers_retry_after(
    vendor: Vendor, stream: bool
) -> None:
    vendor.fake.script(Fail(429, retry_after="7"))
    error = await failure(vendor, stream=stream)
    assert error.kind == "rate_limited"
    assert error.retry_after_s == 7.0
    assert error.retryable
    assert len(vendor.fake.requests) == 1  # the SDK did not retry on its own


async def test_retry_after_as_an_http_date(vendor: Vendor) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    vendor.fake.script(Fail(429, retry_after=format_datetime(when, usegmt=True)))
    error = await failure(vendor, stream=True)
    assert error.kind == "rate_limited"
    assert error.retry_after_s is not None
    assert 20 < error.retry_after_s <= 31


async def test_429_without_retry_after(vendor: Vendor) -> None:
    vendor.fake.script(Fail(429))
    error = await failure(vendor, stream=True)
    assert (error.kind, error.retry_after_s) == ("rate_limited", None)


@pytest.mark.parametrize("status", [500, 503, 529])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
async def test_5xx_is_server(vendor: Vendor, status: int, stream: bool) -> None:
    vendor.fake.script(Fail(status))
    error = await failure(vendor, stream=stream)
    assert error.kind == "server"
    assert error.retryable
    assert len(vendor.fake.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
async def test_4xx_is_bad_request(vendor: Vendor, status: int, stream: bool) -> None:
    vendor.fake.script(Fail(status, message="messages: field required"))
    error = await failure(vendor, stream=stream)
    assert error.kind == "bad_request"
    assert not error.retryable
    assert len(vendor.fake.requests) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
async def test_a_hung_server_times_out(vendor: Vendor, stream: bool) -> None:
    vendor.fake.script(Answer(delay_s=HANG_S))
    started = time.monotonic()
    error = await failure(vendor, stream=stream, timeout_s=1)
    assert error.kind == "timeout"
    assert time.monotonic() - started < HANG_S / 2
    assert len(vendor.fake.requests) == 1


async def test_a_trickling_stream_times_out_overall(vendor: Vendor) -> None:
    # Every chunk comes well within the per-read timeout; only the attempt as a whole is late.
    vendor.fake.script(Answer(text="word " * 60, chunk_delay_s=0.3))
    pieces: list[str] = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        async for piece in vendor.provider.stream(PROMPT, timeout_s=1.5):
            pieces.append(piece)
    assert caught.value.kind == "timeout"
    assert pieces  # it had started answering
    assert time.monotonic() - started < 60 * 0.3 / 2


async def test_an_error_inside_the_stream_is_server(vendor: Vendor) -> None:
    vendor.fake.script(Answer(error_after_chunks=2))
    pieces: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for piece in vendor.provider.stream(PROMPT, timeout_s=10):
            pieces.append(piece)
    assert caught.value.kind == "server"
    assert len(pieces) == 2


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("vendor_name", ["openai", "anthropic"])
async def test_nothing_listening_is_unavailable(closed_port: int, vendor_name: str) -> None:
    provider: OpenAIProvider | AnthropicProvider
    if vendor_name == "openai":
        provider = OpenAIProvider(
            api_key="sk-test", model="gpt-4o-mini", base_url=f"http://127.0.0.1:{closed_port}/v1"
        )
    else:
        provider = AnthropicProvider(
            api_key="sk-ant-test",
            model="claude-haiku-4-5",
            base_url=f"http://127.0.0.1:{closed_port}",
        )
    try:
        for call in (collect(provider), provider.complete(PROMPT, 10)):
            with pytest.raises(ProviderError) as caught:
                await call
            assert caught.value.kind == "unavailable"
    finally:
        await provider.aclose()


async def test_the_fakes_refuse_requests_without_credentials(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    # The fakes check what the real APIs check, so a provider that forgot a header would fail.
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{openai_fake.base_url}/chat/completions", json={})
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        response = await client.post(
            f"{anthropic_fake.base_url}/v1/messages", json={}, headers={"x-api-key": "k"}
        )
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_the_fakes_wire_formats_validate_against_the_sdk_models(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    # The SDKs build responses without validating them, so a field the fake got wrong could go
    # unnoticed by the tests above; strict validation against the SDKs' own models catches it.
    messages = [{"role": "user", "content": "When do you open?"}]
    body: dict[str, Any]
    async with httpx.AsyncClient(timeout=10) as client:
        url = f"{openai_fake.base_url}/chat/completions"
        auth = {"authorization": "Bearer sk-test"}
        body = {"model": "gpt-4o-mini", "messages": messages}
        response = await client.post(url, json=body, headers=auth)
        ChatCompletion.model_validate(response.json(), strict=True)
        streaming = {**body, "stream": True, "stream_options": {"include_usage": True}}
        response = await client.post(url, json=streaming, headers=auth)
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.text.splitlines() if line]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            ChatCompletionChunk.model_validate_json(line.removeprefix("data: "), strict=True)

        url = f"{anthropic_fake.base_url}/v1/messages"
        headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
        body = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": messages}
        response = await client.post(url, json=body, headers=headers)
        Message.model_validate(response.json(), strict=True)
        response = await client.post(url, json={**body, "stream": True}, headers=headers)
        assert response.headers["content-type"].startswith("text/event-stream")
        events = TypeAdapter(RawMessageStreamEvent)
        names: list[str] = []
        for block in response.text.strip().split("\n\n"):
            name_line, data_line = block.splitlines()
            name = name_line.removeprefix("event: ")
            names.append(name)
            if name != "ping":  # not a message event in the SDK's union
                data = events.validate_json(data_line.removeprefix("data: "), strict=True)
                assert data.type == name
        assert names[:3] == ["message_start", "content_block_start", "ping"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
