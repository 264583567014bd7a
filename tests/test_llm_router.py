"""The LLM router through the official OpenAI and Anthropic SDKs against local fake servers that
speak their wire formats: fallback on timeout, 5xx and 429, Retry-After, cooldown shared through
a real Redis and recovery, the privacy guard, and the extractive answerer as the last resort."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from models.anthropic_provider import AnthropicProvider
from models.base import Prompt, Source
from models.extractive import ExtractiveProvider
from models.openai_provider import OpenAIProvider
from models.privacy import redact
from models.router import MemoryCooldowns, RedisCooldowns, Router, RouterConfig
from tests.fakes.llm_servers import Answer, Fail, FakeAnthropic, FakeOpenAI

REDIS_URL = "redis://127.0.0.1:6379/0"

PROMPT = Prompt(
    system="Answer from the sources only.",
    question="When are flu shots given?",
    sources=(Source(1, "Flu shots", "kb/faq/en/vaccines.md", "Flu shots are given every autumn."),),
)
# Patient data planted in a question; none of it may reach a cloud model that may not see it.
PLANTED = (
    "My name is Maria Lopez, born 03/14/1980, MRN 4471123, phone (555) 010-4477, "
    "email maria.lopez@example.invalid, I live at 221 Baker Street. When are flu shots given?"
)
PLANTED_VALUES = ["Maria", "Lopez", "03/14/1980", "4471123", "010-4477", "maria.lopez", "221 Baker"]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default_text="Flu shots are given every autumn [1].") as server:
        yield server


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(default_text="Autumn is flu shot season [1].") as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_servers(openai_server: FakeOpenAI, anthropic_server: FakeAnthropic) -> None:
    openai_server.reset()
    anthropic_server.reset()


def _router(
    openai_server: FakeOpenAI,
    anthropic_server: FakeAnthropic,
    *,
    cooldowns: MemoryCooldowns | RedisCooldowns | None = None,
    **config: object,
) -> Router:
    settings = {"timeout_s": 1.5, "backoff_initial_s": 0.01, "max_retry_wait_s": 0.5, **config}
    return Router(
        [
            OpenAIProvider(api_key="sk-test", model="gpt-4o-mini", base_url=openai_server.base_url),
            AnthropicProvider(
                api_key="sk-ant-test", model="claude-haiku-4-5", base_url=anthropic_server.base_url
            ),
        ],
        ExtractiveProvider(),
        config=RouterConfig(**settings),  # type: ignore[arg-type]
        cooldowns=cooldowns or MemoryCooldowns(),
    )


async def test_the_first_provider_answers_and_streams(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    pieces: list[str] = []

    async def collect(piece: str) -> None:
        pieces.append(piece)

    answer = await _router(openai_server, anthropic_server).answer(PROMPT, on_piece=collect)
    assert answer.provider == "openai" and answer.text == "Flu shots are given every autumn [1]."
    assert len(pieces) > 1 and "".join(pieces) == answer.text
    assert answer.audit()["version"] and answer.audit()["model"] == "gpt-4o-mini"
    assert len(anthropic_server.requests) == 0


@pytest.mark.parametrize("failure", [Fail(500), Fail(503), Answer(delay_s=10)], ids=str)
async def test_a_failing_provider_is_retried_then_the_next_one_answers(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic, failure: Fail | Answer
) -> None:
    openai_server.script(failure, failure)
    answer = await _router(openai_server, anthropic_server).answer(PROMPT)
    assert answer.provider == "anthropic" and "Autumn" in answer.text
    # Two attempts at OpenAI (the router's, the SDK's own retries are off), then Anthropic.
    assert len(openai_server.requests) == 2 and len(anthropic_server.requests) == 1
    outcomes = [a["outcome"] for a in answer.attempts]
    assert outcomes[:2] == ["timeout"] * 2 or outcomes[:2] == ["server"] * 2


async def test_a_short_retry_after_is_waited_out_and_the_same_provider_answers(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    openai_server.script(Fail(429, retry_after="0"))
    answer = await _router(openai_server, anthropic_server).answer(PROMPT)
    assert answer.provider == "openai" and len(openai_server.requests) == 2
    assert [a["outcome"] for a in answer.attempts] == ["rate_limited", "ok"]


async def test_a_long_retry_after_cools_the_provider_down_until_it_recovers(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    now = [1000.0]
    cooldowns = MemoryCooldowns(clock=lambda: now[0])
    router = _router(openai_server, anthropic_server, cooldowns=cooldowns)
    openai_server.script(Fail(429, retry_after="30"))
    first = await router.answer(PROMPT)
    assert first.provider == "anthropic" and len(openai_server.requests) == 1

    second = await router.answer(PROMPT)  # still cooling down: OpenAI is not even asked
    assert second.provider == "anthropic" and len(openai_server.requests) == 1
    assert second.attempts[0] == {"provider": "openai", "outcome": "cooling_down"}

    now[0] += 31  # the Retry-After has passed
    third = await router.answer(PROMPT)
    assert third.provider == "openai" and len(openai_server.requests) == 2


async def test_cooldown_is_shared_through_redis(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    client = aioredis.from_url(REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}:"
    try:
        worker_a = _router(
            openai_server,
            anthropic_server,
            cooldowns=RedisCooldowns(client, prefix=prefix),
            cooldown_s=30.0,
        )
        worker_b = _router(
            openai_server,
            anthropic_server,
            cooldowns=RedisCooldowns(client, prefix=prefix),
            cooldown_s=30.0,
        )
        openai_server.script(Fail(500), Fail(500))
        assert (await worker_a.answer(PROMPT)).provider == "anthropic"
        assert 0 < await client.pttl(prefix + "openai") <= 30_000
        assert (await worker_b.answer(PROMPT)).provider == "anthropic"
        assert len(openai_server.requests) == 2  # worker B never called the cooled provider
        await client.delete(prefix + "openai")  # the cooldown expires
        assert (await worker_b.answer(PROMPT)).provider == "openai"
    finally:
        await client.delete(prefix + "openai")
        await client.aclose()


async def test_when_every_model_fails_the_extractive_answer_comes_from_the_sources(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    openai_server.default = Fail(503)
    anthropic_server.default = Fail(529)
    answer = await _router(openai_server, anthropic_server).answer(PROMPT)
    assert answer.provider == "extractive"
    assert answer.text == "Flu shots are given every autumn. [1]"


async def test_a_bad_request_is_not_retried(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    openai_server.script(Fail(400))
    answer = await _router(openai_server, anthropic_server).answer(PROMPT)
    assert answer.provider == "anthropic" and len(openai_server.requests) == 1


async def test_a_stream_that_breaks_halfway_is_taken_back_before_the_next_provider(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    openai_server.script(Answer(error_after_chunks=2), Answer(error_after_chunks=2))
    shown: list[str] = []

    async def piece(text: str) -> None:
        shown.append(text)

    async def reset() -> None:
        shown.clear()

    answer = await _router(openai_server, anthropic_server).answer(
        PROMPT, on_piece=piece, on_reset=reset
    )
    assert answer.provider == "anthropic" and "".join(shown) == answer.text


async def test_patient_data_never_reaches_a_cloud_provider_that_may_not_see_it(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    openai_server.default = Answer(echo=True)
    question = Prompt(system=PROMPT.system, question=PLANTED, sources=PROMPT.sources)
    answer = await _router(openai_server, anthropic_server).answer(
        question, known_names=("Maria Lopez",)
    )
    wire = str(openai_server.requests[0].body)
    assert not [value for value in PLANTED_VALUES if value in wire]
    assert "When are flu shots given?" in wire and "[NAME]" in wire and "[PHONE]" in wire
    assert set(answer.redacted) >= {"NAME", "DATE", "ID", "PHONE", "EMAIL", "ADDRESS"}


async def test_a_provider_allowed_to_receive_patient_data_gets_the_question_as_written(
    openai_server: FakeOpenAI, anthropic_server: FakeAnthropic
) -> None:
    question = Prompt(system=PROMPT.system, question=PLANTED, sources=PROMPT.sources)
    router = _router(openai_server, anthropic_server, phi_allowed=frozenset({"openai"}))
    answer = await router.answer(question)
    assert "Maria Lopez" in str(openai_server.requests[0].body) and answer.redacted == {}


def test_redaction_keeps_the_clinical_question_readable() -> None:
    cleaned = redact("I'm Diabetic and my sugar was 250 at 9am, can I take 2 tablets of 500 mg?")
    assert cleaned.text == (
        "I'm Diabetic and my sugar was 250 at 9am, can I take 2 tablets of 500 mg?"
    )
    spanish = redact("Me llamo Ana García, nací el 4 de mayo de 1990, mi teléfono es 612 345 678")
    assert "Ana" not in spanish.text and "1990" not in spanish.text and "612" not in spanish.text
