"""The LLM router: the one place that decides which model answers and what happens on failure.

Providers are tried in the configured order. Each gets a few attempts (tenacity: exponential
backoff with jitter, or the server's Retry-After when it is short); a provider that keeps failing,
or asks us to wait longer than is worth waiting, is cooled down for a while — in Redis when
configured, so every worker skips it — and the next provider answers. The extractive answerer
never fails and always comes last, so a patient gets an answer from the clinic's documents even
when every model is down.

Before a cloud provider sees a prompt, the privacy guard redacts patient data unless settings
list that provider as allowed to receive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from core import metrics
from models.base import Prompt, Provider, ProviderError
from models.privacy import redact

log = logging.getLogger(__name__)

PieceSink = Callable[[str], Awaitable[None]]
ResetSink = Callable[[], Awaitable[None]]


class Cooldowns(Protocol):
    async def cooling(self, provider: str) -> bool: ...

    async def cool(self, provider: str, seconds: float) -> None: ...


class MemoryCooldowns:
    """Per-process cooldowns, for the embedded single-process default."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock

    async def cooling(self, provider: str) -> bool:
        return self._until.get(provider, 0.0) > self._clock()

    async def cool(self, provider: str, seconds: float) -> None:
        self._until[provider] = self._clock() + seconds


class RedisCooldowns:
    """Cooldowns shared by every process through one expiring Redis key per provider."""

    def __init__(self, redis: Any, prefix: str = "llm:cooldown:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def cooling(self, provider: str) -> bool:
        return bool(await self._redis.exists(self._prefix + provider))

    async def cool(self, provider: str, seconds: float) -> None:
        await self._redis.set(self._prefix + provider, "1", px=max(1, int(seconds * 1000)))


@dataclass(frozen=True)
class RouterConfig:
    attempts_per_provider: int = 2
    timeout_s: float = 20.0
    cooldown_s: float = 60.0
    # A Retry-After up to this long is waited out; a longer one sends us to the next provider.
    max_retry_wait_s: float = 2.0
    backoff_initial_s: float = 0.25
    # Past this, no further model is tried and the extractive answer is given: the patient's
    # client waits 30 s for a reply before it resends.
    budget_s: float = 25.0
    phi_allowed: frozenset[str] = frozenset()


@dataclass
class RoutedAnswer:
    text: str
    provider: str
    model: str
    version: str
    redacted: dict[str, int] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # Each cloud provider the prompt went to: "redacted" (the privacy guard ran) or
    # "unredacted" (LLM_PHI_ALLOWED_PROVIDERS). Local models keep the data in the clinic.
    sent_to_cloud: dict[str, str] = field(default_factory=dict)

    def audit(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "version": self.version,
            "redacted": self.redacted,
            "attempts": self.attempts,
            "patient_data_sent": self.sent_to_cloud,
        }


class Router:
    def __init__(
        self,
        providers: Sequence[Provider],
        fallback: Provider,
        *,
        config: RouterConfig | None = None,
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self._providers = list(providers)
        self._fallback = fallback
        self._config = config or RouterConfig()
        self._cooldowns = cooldowns or MemoryCooldowns()

    @property
    def providers(self) -> list[Provider]:
        return list(self._providers)

    @property
    def order(self) -> list[str]:
        return [p.name for p in self._providers] + [self._fallback.name]

    async def answer(
        self,
        prompt: Prompt,
        *,
        on_piece: PieceSink | None = None,
        on_reset: ResetSink | None = None,
        known_names: Sequence[str] = (),
    ) -> RoutedAnswer:
        with metrics.timed("llm"):
            return await self._answer(prompt, on_piece, on_reset, known_names)

    async def _answer(
        self,
        prompt: Prompt,
        on_piece: PieceSink | None,
        on_reset: ResetSink | None,
        known_names: Sequence[str],
    ) -> RoutedAnswer:
        attempts: list[dict[str, Any]] = []
        sent_to_cloud: dict[str, str] = {}
        started = time.monotonic()
        for position, provider in enumerate(self._providers, start=1):
            # Passed over, the next provider answers, or the extractive answer after the last.
            onward = "extractive" if position == len(self._providers) else "next_provider"
            if time.monotonic() - started > self._config.budget_s:
                attempts.append({"provider": provider.name, "outcome": "out_of_time"})
                metrics.LLM_FALLBACKS.labels(onward, "out_of_time").inc()
                continue
            if await self._cooldowns.cooling(provider.name):
                attempts.append({"provider": provider.name, "outcome": "cooling_down"})
                metrics.LLM_FALLBACKS.labels(onward, "cooling_down").inc()
                continue
            sent, redacted = self._guard(provider, prompt, known_names)
            if provider.cloud:
                allowed = provider.name in self._config.phi_allowed
                sent_to_cloud[provider.name] = "unredacted" if allowed else "redacted"
            try:
                text = await self._try(provider, sent, attempts, on_piece, on_reset)
            except ProviderError as exc:
                await self._cool_after(provider, exc)
                metrics.LLM_FALLBACKS.labels(onward, exc.kind).inc()
                continue
            return RoutedAnswer(
                text,
                provider.name,
                provider.model,
                provider.version,
                redacted,
                attempts,
                sent_to_cloud,
            )
        text = await self._run_once(self._fallback, prompt, on_piece, on_reset)
        attempts.append({"provider": self._fallback.name, "outcome": "ok"})
        metrics.LLM_CALLS.labels(self._fallback.name, "ok").inc()
        return RoutedAnswer(
            text,
            self._fallback.name,
            self._fallback.model,
            self._fallback.version,
            {},
            attempts,
            sent_to_cloud,
        )

    def _guard(
        self, provider: Provider, prompt: Prompt, known_names: Sequence[str]
    ) -> tuple[Prompt, dict[str, int]]:
        if not provider.cloud or provider.name in self._config.phi_allowed:
            return prompt, {}
        cleaned = redact(prompt.question, known_names=known_names)
        if cleaned.changed:
            log.info(
                "patient data redacted before a cloud call",
                extra={"provider": provider.name, "redacted": cleaned.counts},
            )
        return replace(prompt, question=cleaned.text), cleaned.counts

    async def _try(
        self,
        provider: Provider,
        prompt: Prompt,
        attempts: list[dict[str, Any]],
        on_piece: PieceSink | None,
        on_reset: ResetSink | None,
    ) -> str:
        config = self._config
        backoff = wait_exponential_jitter(
            multiplier=config.backoff_initial_s, max=config.max_retry_wait_s
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, ProviderError) and error.retry_after_s is not None:
                return error.retry_after_s
            return float(backoff(state))

        def worth_retrying(error: BaseException) -> bool:
            if not isinstance(error, ProviderError) or not error.retryable:
                return False
            # Waiting out a long Retry-After keeps the patient waiting: move on instead.
            return error.retry_after_s is None or error.retry_after_s <= config.max_retry_wait_s

        retrying = AsyncRetrying(
            stop=stop_after_attempt(config.attempts_per_provider),
            wait=wait,
            retry=retry_if_exception(worth_retrying),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = time.perf_counter()
                try:
                    text = await self._run_once(provider, prompt, on_piece, on_reset)
                except ProviderError as exc:
                    attempts.append(
                        {"provider": provider.name, "outcome": exc.kind, "ms": _ms(started)}
                    )
                    metrics.LLM_CALLS.labels(provider.name, exc.kind).inc()
                    log.warning(
                        "provider attempt failed",
                        extra={"provider": provider.name, "kind": exc.kind},
                    )
                    raise
                attempts.append({"provider": provider.name, "outcome": "ok", "ms": _ms(started)})
                metrics.LLM_CALLS.labels(provider.name, "ok").inc()
                return text
        raise AssertionError("tenacity ends with a result or the last error")  # pragma: no cover

    async def _run_once(
        self,
        provider: Provider,
        prompt: Prompt,
        on_piece: PieceSink | None,
        on_reset: ResetSink | None,
    ) -> str:
        pieces: list[str] = []
        try:
            async for piece in provider.stream(prompt, timeout_s=self._config.timeout_s):
                pieces.append(piece)
                if on_piece:
                    await on_piece(piece)
        except ProviderError:
            if pieces and on_reset:
                await on_reset()  # the patient saw a partial answer that will not be finished
            raise
        except Exception as exc:  # an SDK or model bug must not cost the patient an answer
            if pieces and on_reset:
                await on_reset()
            raise ProviderError(provider.name, "server", type(exc).__name__) from exc
        return "".join(pieces)

    async def _cool_after(self, provider: Provider, error: ProviderError) -> None:
        seconds = self._config.cooldown_s
        if error.retry_after_s is not None:
            seconds = max(error.retry_after_s, 1.0)
        await self._cooldowns.cool(provider.name, seconds)
        metrics.LLM_COOLDOWNS.labels(provider.name, error.kind).inc()
        log.warning(
            "provider cooled down",
            extra={"provider": provider.name, "kind": error.kind, "seconds": seconds},
        )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
