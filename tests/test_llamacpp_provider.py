"""The llama.cpp provider for real: llama-cpp-python runs a tiny random-weight llama model (and a
LoRA adapter for it) that the test writes itself with the `gguf` package, so nothing is
downloaded. The text is gibberish; what is checked is the provider's behaviour around it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

# Imported here, not skipped when missing: the project installs both, so a missing one fails.
import llama_cpp  # noqa: F401
import pytest

from models.base import Prompt, Provider, ProviderError, Source
from models.llamacpp_provider import LlamaCppProvider
from tests.fakes.tiny_gguf import write_tiny_llama, write_tiny_lora

PROMPT = Prompt(
    system="You are the clinic's assistant. Answer only from the sources.",
    question="When does the clinic open?",
    sources=(Source(1, "Opening hours", "kb/hours.md", "Weekdays 8:00-18:00."),),
    max_tokens=24,
    temperature=0.1,
)
GREEDY = replace(PROMPT, temperature=0.0)
# As many tokens as the context holds: far longer than any timeout used with it.
ENDLESS = replace(PROMPT, max_tokens=100_000)
# Generous: a tiny model answers in well under a second, but CI machines can be slow.
TIMEOUT_S = 60.0


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llamacpp:")]


async def _wait_for_workers_to_end(limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while _workers() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _workers(), "the generation thread kept running after the attempt ended"


def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: Path) -> Path:
    return write_tiny_lora(tiny_model.with_name("tiny-lora.gguf"), tiny_model)


def _provider(model: Path, lora: Path | None = None, n_ctx: int = 1024) -> LlamaCppProvider:
    return LlamaCppProvider(
        model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=n_ctx, n_threads=2
    )


def test_the_tiny_model_file_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    again = write_tiny_llama(tmp_path / "again.gguf")
    assert again.read_bytes() == tiny_model.read_bytes()


async def test_streams_text_pieces_from_the_local_model(tiny_model: Path) -> None:
    provider: Provider = _provider(tiny_model)
    assert isinstance(provider, LlamaCppProvider)
    assert (provider.name, provider.cloud, provider.model) == ("llamacpp", False, "tiny.gguf")
    assert not provider.loaded  # lazily, on first use

    pieces = [piece async for piece in provider.stream(PROMPT, timeout_s=TIMEOUT_S)]

    assert provider.loaded
    assert pieces
    assert all(isinstance(piece, str) and piece for piece in pieces)
    answer = await provider.complete(PROMPT, TIMEOUT_S)
    assert isinstance(answer, str)
    assert answer.strip()


async def test_version_is_the_file_name_and_its_short_sha256(tiny_model: Path) -> None:
    provider = _provider(tiny_model)
    assert provider.version == f"tiny.gguf@{_sha12(tiny_model)}"
    assert re.fullmatch(r"tiny\.gguf@[0-9a-f]{12}", provider.version)


async def test_a_lora_adapter_is_applied_and_named_in_the_version(
    tiny_model: Path, tiny_lora: Path
) -> None:
    base = _provider(tiny_model)
    tuned = _provider(tiny_model, tiny_lora)

    pieces = [piece async for piece in tuned.stream(GREEDY, timeout_s=TIMEOUT_S)]

    assert pieces
    assert all(isinstance(piece, str) for piece in pieces)
    assert tuned.version == (f"tiny.gguf@{_sha12(tiny_model)}+tiny-lora.gguf@{_sha12(tiny_lora)}")
    # The adapter really takes part: greedy decoding of the same prompt comes out different.
    assert "".join(pieces) != await base.complete(GREEDY, TIMEOUT_S)


async def test_a_missing_model_file_is_unavailable_and_says_what_to_configure(
    tmp_path: Path,
) -> None:
    provider = _provider(tmp_path / "absent.gguf")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(PROMPT, TIMEOUT_S)
    assert caught.value.kind == "unavailable"
    assert caught.value.provider == "llamacpp"
    assert "model_path" in str(caught.value)
    assert "absent.gguf" in str(caught.value)
    assert not provider.loaded
    assert provider.version.endswith("@unavailable")


@pytest.mark.parametrize("damage", ["not-gguf", "truncated"])
async def test_a_corrupt_model_file_is_unavailable(
    tiny_model: Path, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "broken.gguf"
    data = tiny_model.read_bytes()
    broken.write_bytes(
        b"this is not a model\n" * 100 if damage == "not-gguf" else data[: len(data) // 2]
    )
    provider = _provider(broken)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(PROMPT, TIMEOUT_S)
    assert caught.value.kind == "unavailable"
    assert "model_path" in str(caught.value)


async def test_a_missing_or_mismatched_lora_adapter_is_unavailable(
    tiny_model: Path, tmp_path: Path
) -> None:
    missing = _provider(tiny_model, tmp_path / "absent-lora.gguf")
    with pytest.raises(ProviderError) as caught:
        await missing.complete(PROMPT, TIMEOUT_S)
    assert caught.value.kind == "unavailable"
    assert "lora_path" in str(caught.value)

    # A model file where an adapter belongs: llama.cpp refuses it (general.type is "model").
    wrong = _provider(tiny_model, tiny_model)
    with pytest.raises(ProviderError) as caught:
        await wrong.complete(PROMPT, TIMEOUT_S)
    assert caught.value.kind == "unavailable"
    assert "lora_path" in str(caught.value)


async def test_a_prompt_longer_than_the_context_is_a_bad_request(tiny_model: Path) -> None:
    provider = _provider(tiny_model, n_ctx=256)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(replace(PROMPT, question="Why? " * 300), TIMEOUT_S)
    assert caught.value.kind == "bad_request"  # a provider with a longer context may manage
    assert "context window" in str(caught.value)


async def test_a_context_size_off_llama_cpps_256_token_steps_still_works(tiny_model: Path) -> None:
    # llama.cpp makes n_ctx=300 a 512-token context; this prompt and answer need more than 300.
    provider = _provider(tiny_model, n_ctx=300)
    assert provider.n_ctx == 512
    answer = await provider.complete(replace(PROMPT, question="Why? " * 55), TIMEOUT_S)
    assert isinstance(answer, str)
    assert answer


async def test_a_timeout_raises_promptly_and_stops_the_generation(tiny_model: Path) -> None:
    # A context of 8192 tokens, all to generate: many seconds of work if nothing stopped it.
    provider = _provider(tiny_model, n_ctx=8192)
    await asyncio.to_thread(provider.load)  # what is timed is generating, not loading

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        async for _ in provider.stream(ENDLESS, timeout_s=0.3):
            pass
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 5.0

    # The worker notices at its next token and lets go of the model: the next attempt runs.
    await _wait_for_workers_to_end()
    assert await provider.complete(PROMPT, TIMEOUT_S)


async def test_a_consumer_that_stops_reading_stops_the_generation(tiny_model: Path) -> None:
    provider = _provider(tiny_model, n_ctx=8192)
    stream = provider.stream(ENDLESS, timeout_s=TIMEOUT_S)
    first = await anext(stream)
    assert isinstance(first, str)
    await stream.aclose()
    await _wait_for_workers_to_end()


async def test_concurrent_attempts_take_turns_on_one_model(tiny_model: Path) -> None:
    provider = _provider(tiny_model)
    answers = await asyncio.gather(
        *(provider.complete(replace(PROMPT, question=q), TIMEOUT_S) for q in ("One?", "Two?"))
    )
    assert all(isinstance(answer, str) and answer for answer in answers)


async def test_an_attempt_that_waits_too_long_for_a_busy_model_times_out(
    tiny_model: Path,
) -> None:
    provider = _provider(tiny_model, n_ctx=8192)
    await asyncio.to_thread(provider.load)
    busy = provider.stream(ENDLESS, timeout_s=TIMEOUT_S)
    await anext(busy)  # the model is now generating for `busy`
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(PROMPT, 0.3)
        assert caught.value.kind == "timeout"
    finally:
        await busy.aclose()
    await _wait_for_workers_to_end()
